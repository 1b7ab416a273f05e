"""The markers around each answer a prompt shows a model, and their removal from what
a model writes: defined once for the chairman, which fences answers and cleans its
synthesis, and for a front end that shows the synthesis while it is written
(``council api``'s stream), so both show the same text.

A marker cannot be forged from inside an answer (``fence`` breaks up any ``<<<``),
but a model often echoes one, whole or clipped (``<<<Response A>>``).
"""

from __future__ import annotations

import re

_ECHOED = re.compile(r"[ \t]?<{2,3}\s*(?:END\s+)?Response\s+[A-Z]\s*>{1,3}")


def fence(label: str, text: str) -> str:
    safe = text.replace("<<<", "< < <").replace(">>>", "> > >")
    return f"<<<{label}>>>\n{safe}\n<<<END {label}>>>"


def unfenced(text: str) -> str:
    """``text`` without the markers a model echoed; a line that held only a marker goes
    with it, and the model's own words stay as they were."""
    return "".join(unfenced_line(line) for line in text.splitlines(keepends=True)).strip("\n")


def unfenced_line(line: str) -> str:
    """One line, with its ending, without echoed markers ("" when it held only one)."""
    cleaned = _ECHOED.sub("", line)
    return cleaned if cleaned.strip() or not line.strip() or cleaned == line else ""


def settled(line: str) -> int:
    """How much of a line still being written no marker can change: up to its first
    ``<``, without the spaces before it (a marker takes one with it); none while the
    line is blank (a line that holds only a marker goes whole)."""
    start = line.find("<")
    kept = line[: len(line) if start < 0 else start].rstrip(" \t")
    return len(kept) if kept.strip() else 0
