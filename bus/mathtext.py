r"""Where a model's text is math, found once for every front end that shows it.

The models write LaTeX between ``\( \)`` (inline) and ``\[ \]`` or ``$$``
(display), and often a result as ``\boxed{…}`` outside either. A single ``$`` is
not taken for math: in answers about prices it is money far more often. Code
(fenced or inline) is never math, whatever it contains.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

Kind = Literal["text", "code", "inline", "display"]


class Piece(NamedTuple):
    kind: Kind
    text: str
    """The piece as written; for math, the LaTeX between its delimiters."""


_MARKS = re.compile(
    r"(?P<fence>```.*?(?:```|\Z))"
    r"|(?P<code>`[^`\n]+`)"
    r"|\\\[(?P<display>.+?)\\\]"
    r"|\$\$(?P<dollars>.+?)\$\$"
    r"|\\\((?P<inline>.+?)\\\)"
    r"|(?P<boxed>\\boxed\{)",
    re.DOTALL,
)
_OPENED = re.compile(r"\\\(|\\\[|\$\$|\\boxed\{")


def pieces(text: str) -> list[Piece]:
    """``text`` cut into its prose, code and math, in order; joined they are ``text``
    again, but for the math's delimiters. A delimiter left open is prose (a text
    still being written closes it later)."""
    found: list[Piece] = []
    at = 0
    while match := _MARKS.search(text, at):
        _add(found, "text", text[at : match.start()])
        if match["boxed"]:
            end = _closing_brace(text, match.end())
            if end is None:
                _add(found, "text", match[0])
                at = match.end()
                continue
            _add(found, "inline", text[match.start() : end + 1])
            at = end + 1
            continue
        if match["fence"] or match["code"]:
            _add(found, "code", match[0])
        elif match["inline"] is not None:
            _add(found, "inline", match["inline"])
        else:
            _add(found, "display", match["display"] or match["dollars"] or "")
        at = match.end()
    _add(found, "text", text[at:])
    return found


def written_so_far(text: str) -> str:
    """What of a text still being written can be shown: all of it but a formula it
    has opened and not closed yet (shown as prose, "\\(2x^2 - 7x" would flash as
    "(2x^2 - 7x" before it is set)."""
    found = pieces(text)
    if found and found[-1].kind == "text" and (opened := _OPENED.search(found[-1].text)):
        return text[: len(text) - len(found[-1].text) + opened.start()]
    return text


def _add(found: list[Piece], kind: Kind, text: str) -> None:
    if not text:
        return
    if kind == "text" and found and found[-1].kind == "text":
        found[-1] = Piece("text", found[-1].text + text)
    else:
        found.append(Piece(kind, text))


def _closing_brace(text: str, start: int) -> int | None:
    """The index of the brace closing one opened just before ``start``, or None."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{" and text[i - 1] != "\\":
            depth += 1
        elif text[i] == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return i
    return None
