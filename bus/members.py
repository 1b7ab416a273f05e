"""A member's name, ``model[@persona][+method][#sample]``, read alike by every role.

``qwen2.5-coder-1.5b@skeptic#2`` is the second sample (another seed) of that
model asked with the ``skeptic`` persona; ``qwen2.5-coder-1.5b+code`` answers by
writing a program that the sandbox runs. A bare model is its first sample, in
words, with no persona.
"""

from __future__ import annotations

from typing import Literal

Method = Literal["words", "code"]

PERSONAS = ("careful", "concise", "skeptic", "teacher")
"""The ``@persona`` a member name may carry (the chairman's prompts give each its words)."""

METHODS: dict[str, Method] = {"code": "code"}
"""The ``+method`` suffixes a member name may carry; without one a member answers in words."""


def member_name(model: str, persona: str = "", method: Method = "words", sample: int = 1) -> str:
    """The name a member goes by: the inverse of the readers below."""
    suffix = next((name for name, m in METHODS.items() if m == method), "")
    return (
        model
        + (f"@{persona}" if persona else "")
        + (f"+{suffix}" if suffix else "")
        + (f"#{sample}" if sample > 1 else "")
    )


def split_member(spec: str) -> tuple[str, str]:
    """``model[@persona][+method][#sample]`` → (model, persona); "" for no persona."""
    spec = _method_split(_sample_split(spec)[0])[0]
    model, at, persona = spec.rpartition("@")
    if at and persona and all(c.isalnum() or c in "-_" for c in persona):
        return model, persona
    return spec, ""


def model_of(spec: str) -> str:
    """The model that answers for a member."""
    return split_member(spec)[0]


def sample_of(spec: str) -> int:
    """Which sample of its model a member is: ``model#3`` → 3; 1 without a suffix."""
    return _sample_split(spec)[1]


def method_of(spec: str) -> Method:
    """How a member answers: ``model+code`` by a program, anything else in words."""
    return _method_split(_sample_split(spec)[0])[1]


def _sample_split(spec: str) -> tuple[str, int]:
    base, hash_, number = spec.rpartition("#")
    if hash_ and base and number.isdigit() and int(number) > 0:
        return base, int(number)
    return spec, 1


def _method_split(spec: str) -> tuple[str, Method]:
    base, plus, method = spec.rpartition("+")
    if plus and base and method in METHODS:
        return base, METHODS[method]
    return spec, "words"
