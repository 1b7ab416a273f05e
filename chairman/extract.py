"""A short, comparable form of an answer, for votes and for majority checks.

Small models wrap the same answer in different prose; what decides most
checkable questions is the last number, or failing that the answer's first
line. Two answers agree when these forms are equal.
"""

from __future__ import annotations

import re
from collections import Counter

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORDS = re.compile(r"[^\w\s]")


def last_number(text: str) -> float | None:
    found = NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def extract(text: str) -> str:
    """The last number (``42`` for "42.0"), else the first line lowercased without
    punctuation; "" for an empty answer."""
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


def vote(texts_by_member: dict[str, str], order: list[str]) -> str:
    """The member whose answer's form most members share; ties go to the earlier in
    ``order`` (the ranking)."""
    forms = {m: extract(t) for m, t in texts_by_member.items()}
    counts = Counter(f for f in forms.values() if f)
    if not counts:
        return order[0]
    best = max(counts.values())
    return next(m for m in order if forms.get(m) and counts[forms[m]] == best)
