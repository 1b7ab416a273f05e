"""Turns a ``Question`` into a session ``Plan``, or a ``Rejected`` with its reason."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from council.bus.members import PERSONAS, model_of, split_member
from council.bus.messages import MAX_QUESTION_CHARS, Question, Rejected, ReviewMode
from council.chairman.conductor import Plan
from council.chairman.strategies import STRATEGIES


@dataclass(frozen=True)
class Defaults:
    members: tuple[str, ...]
    chairman: str
    mode: ReviewMode = "pairwise"


def new_session_id() -> str:
    return uuid.uuid4().hex[:16]


def needed_models(question: Question, defaults: Defaults) -> tuple[set[str], str]:
    members = question.members or list(defaults.members)
    return {model_of(m) for m in members}, question.chairman or defaults.chairman


def admit(
    question: Question,
    defaults: Defaults,
    *,
    quorum: int,
    opinion_models: set[str],
    synthesis_models: set[str],
) -> Plan | Rejected:
    text = question.question.strip()
    if not text:
        return Rejected(reason="empty_question", detail="the question is empty")
    if len(text) > MAX_QUESTION_CHARS:
        return Rejected(
            reason="question_too_long",
            detail=f"{len(text)} characters; the limit is {MAX_QUESTION_CHARS}",
        )
    members = [m.strip() for m in (question.members or list(defaults.members))]
    duplicates = sorted({m for m in members if members.count(m) > 1})
    if duplicates:
        return Rejected(
            reason="duplicate_member",
            detail=f"{', '.join(duplicates)} named twice; give copies a persona (model@careful)",
        )
    if question.alone:
        if len(members) != 1 or not question.members:
            return Rejected(
                reason="too_few_members" if not members else "too_many_members",
                detail="a question asked alone names exactly one member",
            )
    elif len(members) < max(2, quorum):
        return Rejected(
            reason="too_few_members",
            detail=f"{len(members)} member(s); a council needs at least {max(2, quorum)}",
        )
    if question.strategy and question.strategy not in STRATEGIES:
        return Rejected(
            reason="unknown_strategy",
            detail=f"{question.strategy}: strategies are {', '.join(STRATEGIES)}",
        )
    for member in members:
        _, persona = split_member(member)
        if persona and persona not in PERSONAS:
            known = ", ".join(PERSONAS)
            return Rejected(reason="unknown_persona", detail=f"{member}: personas are {known}")
    unknown = sorted({model_of(m) for m in members} - opinion_models)
    chairman = (question.chairman or defaults.chairman).strip()
    if question.alone:
        chairman = model_of(members[0])  # nobody synthesizes
    elif chairman not in synthesis_models:
        unknown.append(f"{chairman} (as chairman)")
    if unknown:
        served = ", ".join(sorted(opinion_models)) or "none"
        return Rejected(
            reason="unknown_model",
            detail=f"no agent serves {', '.join(unknown)}; served models: {served}",
        )
    return Plan(
        session_id=new_session_id(),
        question=text,
        members=members,
        chairman=chairman,
        mode=question.mode,
        seed=question.seed if question.seed is not None else random.randrange(2**31),
        temperature=question.temperature,
        alone=question.alone,
        max_tokens=question.max_tokens,
        strategy=question.strategy,
    )
