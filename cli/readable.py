r"""A model's math as a terminal shows it: ``\frac{2}{3} \text{ dollars}`` reads
"2/3 dollars", ``\boxed{8}`` reads "8", ``\times`` reads "×" (pylatexenc does the
LaTeX; the fractions and operators here are spelled as a person types them)."""

from __future__ import annotations

import re
from functools import cache

from pylatexenc import latex2text, latexwalker
from pylatexenc.macrospec import MacroSpec

from council.bus import mathtext

_FRACTIONS = ("frac", "dfrac", "tfrac")
_OPERATORS = {
    "times": "×", "cdot": "·", "div": "÷", "approx": "≈", "pm": "±",
    "leq": "≤", "le": "≤", "geq": "≥", "ge": "≥", "neq": "≠", "ne": "≠",
}  # fmt: skip


def readable(text: str) -> str:
    """``text`` with its math as plain text; prose and code as written."""
    shown = []
    for piece in mathtext.pieces(text):
        if piece.kind in ("text", "code"):
            shown.append(piece.text)
        else:
            plain = _as_text(piece.text)
            shown.append(plain if piece.kind == "inline" else f"\n    {plain}\n")
    return "".join(shown)


def _as_text(latex: str) -> str:
    walker_context, text_context = _contexts()
    try:
        nodes = latexwalker.LatexWalker(latex, latex_context=walker_context).get_latex_nodes()[0]
        plain = latex2text.LatexNodes2Text(
            latex_context=text_context, math_mode="text"
        ).nodelist_to_text(nodes)
    except latexwalker.LatexWalkerError:
        return latex  # not LaTeX after all: as written
    return re.sub(r"[ \t]{2,}", " ", plain).strip()


@cache
def _contexts() -> tuple[object, object]:
    """What the parser and the text renderer know beyond their defaults (built once:
    their default databases are large)."""
    walker_context = latexwalker.get_default_latex_context_db()
    walker_context.add_context_category(
        "council",
        prepend=True,
        macros=[MacroSpec(name, "{{") for name in _FRACTIONS] + [MacroSpec("boxed", "{")],
    )
    text_context = latex2text.get_default_latex_context_db()
    text_context.add_context_category(
        "council",
        prepend=True,
        macros=[
            *(latex2text.MacroTextSpec(name, simplify_repl=_fraction) for name in _FRACTIONS),
            latex2text.MacroTextSpec("boxed", simplify_repl="%s"),
            *(latex2text.MacroTextSpec(name, simplify_repl=f" {sign} ")
              for name, sign in _OPERATORS.items()),
        ],
    )  # fmt: skip
    return walker_context, text_context


def _fraction(node: latexwalker.LatexMacroNode, l2tobj: latex2text.LatexNodes2Text) -> str:
    """a/b, with parentheses where a part is more than one number or name."""
    parts = [l2tobj.nodelist_to_text([arg]).strip() for arg in node.nodeargd.argnlist[-2:]]
    return "/".join(p if re.fullmatch(r"[\w.]+", p) else f"({p})" for p in parts)
