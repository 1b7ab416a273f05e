"""Eval questions and their checkers: accepted answers, a regular expression, or a number.

A line of an eval file: ``{"id": "...", "kind": "...", "question": "...",
"check": {"answers": [...]} | {"regex": "..."} | {"number": 42, "tolerance": 0}}``.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from council.bus.errors import CouncilError
from council.chairman.extract import last_number


class EvalFileError(CouncilError):
    def __init__(self, path: Path, line: int, detail: str) -> None:
        super().__init__(f"{path}:{line}: {detail}")


class Check(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    answers: list[str] | None = None
    """Right when the answer contains any of these (case-insensitive)."""
    regex: str | None = None
    """Right when ``re.search`` finds it (case-insensitive)."""
    number: float | None = None
    """Right when the answer's last number is within ``tolerance`` of it."""
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        given = [f for f in ("answers", "regex", "number") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError(f"a check has exactly one of answers, regex, number; got {given}")
        if self.regex is not None:
            re.compile(self.regex)

    def accepts(self, answer: str) -> bool:
        if self.answers is not None:
            lowered = answer.casefold()
            return any(a.casefold() in lowered for a in self.answers)
        if self.regex is not None:
            return re.search(self.regex, answer, re.IGNORECASE) is not None
        assert self.number is not None
        found = last_number(answer)
        return found is not None and abs(found - self.number) <= self.tolerance


class EvalQuestion(msgspec.Struct, kw_only=True):
    id: str
    question: str
    check: Check
    kind: str = ""
    source: str = ""


def load(path: Path) -> list[EvalQuestion]:
    """Every question of a JSONL file; a bad line is an error naming its line."""
    questions: list[EvalQuestion] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalFileError(path, 0, f"cannot read: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            question = msgspec.json.decode(line, type=EvalQuestion)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError, re.error) as exc:
            raise EvalFileError(path, number, str(exc)) from None
        if question.id in seen:
            raise EvalFileError(path, number, f"id {question.id!r} is used twice")
        seen.add(question.id)
        questions.append(question)
    if not questions:
        raise EvalFileError(path, 0, "no questions")
    return questions
