"""An answer's conclusion, and a short comparable form of it for votes and agreement.

Members work a question out and end on a final-answer line ("Final answer: 42");
that line is the answer, the rest is working for reviewers and the chairman.
Small models word the line in several ways (bold, "The final answer is",
``\\boxed{}``), so all are read; the last one wins. An answer with no such line
(a cut-off working, a model that ignored the format) falls back to its last
number, or its first line. Two answers agree when their forms are equal.
"""

from __future__ import annotations

import re
from collections import Counter

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORDS = re.compile(r"[^\w\s]")
_FINAL_LINE = re.compile(
    r"(?:final[ \t]+answer|the[ \t]+answer[ \t]+is)[ \t]*(?:is)?[ \t]*[:=\-]?[ \t]*"
    r"(?P<answer>[^\n]*)",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\boxed\{(?P<answer>(?:[^{}]|\{[^{}]*\})*)\}")
_LATEX_DELIMITERS = re.compile(r"\\[()\[\]]")
_DECORATION = " \t*_`#>:.$\"'"


def conclusion(text: str) -> str:
    """What the answer's last final-answer line (or ``\\boxed{}``) says; "" when it
    has none."""
    matches = [*_FINAL_LINE.finditer(text), *_BOXED.finditer(text)]
    for match in sorted(matches, key=lambda m: m.start(), reverse=True):
        line = match.group("answer")
        boxed = _BOXED.search(line)
        answer = boxed.group("answer") if boxed else _LATEX_DELIMITERS.sub("", line)
        answer = answer.strip(_DECORATION).strip()
        if answer:  # "the final answer is:" with the answer on the next line reads on
            return answer
    return ""


def stated(text: str) -> str:
    """What an answer concludes: its final-answer line, or the whole answer when it is
    short enough to be its own conclusion ("Jupiter"); "" when it states neither."""
    return conclusion(text) or (text.strip().strip(_DECORATION).strip() if is_short(text) else "")


def is_short(text: str) -> bool:
    """A one-line answer of a few words: its own conclusion ("Jupiter", "12 apples")."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return len(lines) == 1 and len(lines[0].split()) <= 4


def last_number(text: str) -> float | None:
    found = NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def checked_text(text: str) -> str:
    """The part of an answer that a checker or a vote reads: its conclusion when it
    states one, else the whole text."""
    return conclusion(text) or text


def extract(text: str) -> str:
    """The conclusion's (else the text's) last number (``42`` for "42.0"), else its
    first line lowercased without punctuation; "" for an empty answer."""
    text = checked_text(text)
    number = last_number(text)
    if number is not None:
        return f"{number:g}"
    first = next((line for line in text.strip().splitlines() if line.strip()), "")
    return " ".join(_WORDS.sub(" ", first.lower()).split())[:80]


def majority(texts_by_member: dict[str, str]) -> list[str]:
    """The members, in order, whose answers share one non-empty form that more than
    half of all the members gave; [] when no form has a majority."""
    forms = {m: extract(t) for m, t in texts_by_member.items()}
    counts = Counter(f for f in forms.values() if f)
    if not counts:
        return []
    form, count = counts.most_common(1)[0]
    if count * 2 <= len(forms):
        return []
    return [m for m, f in forms.items() if f == form]


def unanimous(texts_by_member: dict[str, str]) -> list[str]:
    """All the members, when there are at least two and every answer has the same
    non-empty form; else []."""
    forms = {extract(t) for t in texts_by_member.values()}
    if len(texts_by_member) < 2 or len(forms) != 1 or "" in forms:
        return []
    return list(texts_by_member)


def vote(texts_by_member: dict[str, str], order: list[str]) -> str:
    """The member whose answer's form most members share; ties go to the earlier in
    ``order`` (the ranking)."""
    forms = {m: extract(t) for m, t in texts_by_member.items()}
    counts = Counter(f for f in forms.values() if f)
    if not counts:
        return order[0]
    best = max(counts.values())
    return next(m for m in order if forms.get(m) and counts[forms[m]] == best)
