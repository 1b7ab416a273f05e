"""Admission: every bad question gets its own Rejected reason."""

from __future__ import annotations

import pytest

from council.bus.messages import MAX_QUESTION_CHARS, Question, Rejected
from council.chairman.admission import Defaults, admit
from council.chairman.core import Plan

DEFAULTS = Defaults(members=("a", "b", "c"), chairman="a")
SERVED = {"a", "b", "c"}


def decide(question: Question) -> Plan | Rejected:
    return admit(question, DEFAULTS, quorum=2, opinion_models=SERVED, synthesis_models={"a"})


@pytest.mark.parametrize(
    ("question", "reason"),
    [
        (Question(question=""), "empty_question"),
        (Question(question="  \n\t "), "empty_question"),
        (Question(question="x" * (MAX_QUESTION_CHARS + 1)), "question_too_long"),
        (Question(question="q", members=["a", "a"]), "duplicate_member"),
        (Question(question="q", members=["a"]), "too_few_members"),
        (Question(question="q", members=["a", "zzz"]), "unknown_model"),
        (Question(question="q", chairman="b"), "unknown_model"),
        (Question(question="q", members=["a@careful", "a@pirate"]), "unknown_persona"),
        (Question(question="q", strategy="coin-toss"), "unknown_strategy"),
    ],
)
def test_bad_question_is_rejected_with_its_reason(question: Question, reason: str) -> None:
    """Each kind of bad question maps to one documented reason with a detail."""
    decision = decide(question)
    assert isinstance(decision, Rejected)
    assert decision.reason == reason
    assert decision.detail


def test_unknown_model_rejection_lists_served_models() -> None:
    """The user learns which models are served."""
    decision = decide(Question(question="q", members=["a", "zzz"]))
    assert isinstance(decision, Rejected)
    assert "zzz" in decision.detail
    assert "a, b, c" in decision.detail


def test_good_question_gets_a_plan_with_defaults_and_personas() -> None:
    """Defaults fill what the question leaves out; persona copies of one model are fine."""
    plan = decide(Question(question="  Why?  ", seed=3))
    assert isinstance(plan, Plan)
    assert (plan.question, plan.members, plan.chairman, plan.seed) == (
        "Why?",
        ["a", "b", "c"],
        "a",
        3,
    )
    personas = decide(Question(question="q", members=["a@careful", "a@skeptic"]))
    assert isinstance(personas, Plan)
    assert personas.session_id != plan.session_id


def test_a_question_asked_alone_names_exactly_one_member() -> None:
    served = {"m1", "m2"}
    alone = admit(
        Question(question="q", members=["m2"], alone=True), DEFAULTS,
        quorum=2, opinion_models=served, synthesis_models=set(),
    )  # fmt: skip
    assert isinstance(alone, Plan)
    assert alone.alone
    assert alone.members == ["m2"]
    for members in ([], ["m1", "m2"]):
        rejected = admit(
            Question(question="q", members=members, alone=True), DEFAULTS,
            quorum=2, opinion_models=served, synthesis_models=set(),
        )  # fmt: skip
        assert isinstance(rejected, Rejected)
        assert "exactly one member" in rejected.detail
