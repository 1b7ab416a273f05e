"""Turns a question into a session ``Plan``, or a ``Rejected`` with its reason: all
of admission in one place (the message, the chairman's load, the members, the
conversation it follows up), so that the chairman's service only runs what it is
given."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

import msgspec
import structlog
from nats.aio.client import Client

from council.bus import subjects
from council.bus.client.roster import Roster
from council.bus.codec import decode_question
from council.bus.errors import InvalidMessage
from council.bus.members import PERSONAS, model_of, split_member
from council.bus.messages import (
    MAX_DOCUMENT_CHARS,
    MAX_QUESTION_CHARS,
    Document,
    Preset,
    PresetInfo,
    Presets,
    Question,
    Rejected,
    ReviewMode,
    Turn,
)
from council.bus.transport.stream import conversation
from council.bus.tunables import tunable
from council.chairman import presets as named
from council.chairman import prompts
from council.chairman.config import CouncilConfig
from council.chairman.core import Plan
from council.chairman.documents import DocumentStore
from council.chairman.strategies import DEFAULT as DEFAULT_STRATEGY
from council.chairman.strategies import STRATEGIES

log = structlog.get_logger()


LISTING_ASKS_AGENTS_EVERY_S = 5.0
"""A listing of the presets asks the agents again at most this often: a preset whose
model no agent serves (`mixed` on a one-model host) would otherwise cost every
listing a roster round (each `/v1/models`, each Chat page)."""

DEFAULT_MEMBERS = ("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b#2", "qwen2.5-coder-1.5b#3")
"""Three samples of the strongest packaged model: 87.5% against 79.4% for the three
models (smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b) on the 160 development
questions in one run (docs/quality.md, `evals/results/dev--defaults-ab.report.json`)."""


@dataclass(frozen=True)
class Defaults:
    """What a question leaves to the chairman: who answers, who chairs, how they
    review and conclude (a client's own flags set them on its question)."""

    members: tuple[str, ...] = tunable(
        DEFAULT_MEMBERS,
        "COUNCIL_MEMBERS",
        "council members, comma-separated: MODEL, MODEL@PERSONA, MODEL+code for a member that "
        "answers by a program run in the sandbox, and MODEL#2 for a second sample (the "
        "default, three samples of the 1.5B, measured above three distinct models: "
        "docs/quality.md)",
    )
    chairman: str = tunable("qwen2.5-coder-1.5b", "COUNCIL_CHAIRMAN", "the chairman's model")
    mode: ReviewMode = tunable(
        "pairwise",
        "COUNCIL_MODE",
        "review mode: pairwise, rank, or compute (reviewers check by a program in the sandbox)",
    )
    strategy: str = tunable(
        DEFAULT_STRATEGY,
        "COUNCIL_STRATEGY",
        "how the chairman concludes: " + ", ".join(STRATEGIES) + " (docs/how-it-works.md)",
    )
    presets: str = tunable("", "COUNCIL_PRESETS", named.SETTING_HELP)

    @property
    def own(self) -> Preset:
        """These defaults as the preset a question naming none runs."""
        return Preset(
            summary="the council as the chairman is configured",
            members=list(self.members),
            chairman=self.chairman,
            strategy=self.strategy,
            mode=self.mode,
        )


def new_session_id(person: str) -> str:
    """A new session of ``person``: its id begins with theirs (``subjects.owner_of``)."""
    return subjects.owned(person, uuid.uuid4().hex[:16])


def needed_models(question: Question, defaults: Defaults) -> tuple[set[str], str]:
    members = question.members or list(defaults.members)
    return {model_of(m) for m in members}, question.chairman or defaults.chairman


def admit(
    question: Question,
    defaults: Defaults,
    *,
    person: str = subjects.ANYONE,
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
    attached = sum(len(d.text) for d in question.documents)
    if attached > MAX_DOCUMENT_CHARS:
        return Rejected(
            reason="documents_too_long",
            detail=f"{attached:,} characters of files; the limit is {MAX_DOCUMENT_CHARS:,}",
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
        session_id=new_session_id(person),
        question=text,
        members=members,
        chairman=chairman,
        mode=question.mode,
        seed=question.seed if question.seed is not None else random.randrange(2**31),
        temperature=question.temperature,
        alone=question.alone,
        max_tokens=question.max_tokens,
        strategy=question.strategy or defaults.strategy,
        remember=question.remember,
        preset=question.preset if question.preset != named.DEFAULT else "",
    )


class Admission:
    """A chairman's admission of the questions it is asked."""

    def __init__(
        self,
        nc: Client,
        defaults: Defaults,
        config: CouncilConfig,
        roster: Roster,
        documents: DocumentStore | None = None,
    ) -> None:
        """``documents``: where large files' text is kept (None: files come inline only)."""
        self.nc = nc
        self.documents = documents
        self.js = nc.jetstream()
        self.defaults = defaults
        self.config = config
        self.roster = roster
        self.presets = named.table(defaults.presets)  # BadPresets: the chairman won't start
        self._listing_asked_at = -LISTING_ASKS_AGENTS_EVERY_S

    async def listed(self) -> Presets:
        """The defaults and the presets, with the models each lacks (the roster asked
        again when one seems to lack any, as admission does, within a limit)."""
        listed = self._listed()
        since = time.monotonic() - self._listing_asked_at
        if any(p.missing for p in listed) and since >= LISTING_ASKS_AGENTS_EVERY_S:
            self._listing_asked_at = time.monotonic()
            await self.roster.refresh()
            listed = self._listed()
        return Presets(presets=listed)

    def _listed(self) -> list[PresetInfo]:
        roster = self.roster
        answering = roster.models("opinion") & roster.models("review")
        return named.listed(self.presets, self.defaults.own, answering, roster.models("synthesize"))

    async def admit(self, data: bytes, subject: str) -> Plan | Rejected:
        """The plan of a question as it came off the bus, its conversation's turns
        included; a named refusal otherwise (logged)."""
        try:
            question = decode_question(data, subject)
        except InvalidMessage as exc:
            log.warning("bad_question", error=exc.detail)
            return Rejected(reason="bad_request", detail=exc.detail)
        if question.preset and question.preset != named.DEFAULT:
            if question.preset not in self.presets:
                known = ", ".join([named.DEFAULT, *self.presets])
                detail = f"{question.preset}: presets are {known}"
                log.info("question_rejected", reason="unknown_preset", detail=detail)
                return Rejected(reason="unknown_preset", detail=detail)
            question = named.applied(question, self.presets[question.preset])
        members, chairman = needed_models(question, self.defaults)
        roster = self.roster
        if not members <= roster.models("opinion") or chairman not in roster.models("synthesize"):
            await roster.refresh()
        person = subjects.person_of(subject) or subjects.ANYONE
        plan = admit(
            question,
            self.defaults,
            person=person,
            quorum=self.config.quorum,
            opinion_models=roster.models("opinion") & roster.models("review"),
            synthesis_models=roster.models("synthesize"),
        )
        if not isinstance(plan, Rejected):
            files = await self._stored_read(person, question.documents)
            plan = (
                files
                if isinstance(files, Rejected)
                else await self._in_conversation(
                    plan, question.conversation, question.context, files
                )
            )
        if isinstance(plan, Rejected):
            log.info("question_rejected", reason=plan.reason, detail=plan.detail)
        return plan

    async def _stored_read(
        self, person: str, documents: list[Document]
    ) -> list[Document] | Rejected:
        """The question's files, those sent ahead to the object store read back."""
        read: list[Document] = []
        for document in documents:
            if document.stored and self.documents is None:
                return Rejected(reason="bad_request", detail="this chairman keeps no files")
            found = (
                await self.documents.read(person, document)
                if document.stored and self.documents
                else document
            )
            if isinstance(found, Rejected):
                return found
            read.append(found)
        return read

    async def _in_conversation(
        self, plan: Plan, conversation_id: str, context: list[Turn], documents: list[Document]
    ) -> Plan | Rejected:
        """A new question starts a conversation named by its session id, with the
        earlier turns its client gave, if any; a follow-up gets its conversation's
        turns, read from the stream. Either within the history budget, and the files
        of the question and its turns within the document budget."""
        turns = context
        if conversation_id and subjects.owner_of(conversation_id) != subjects.owner_of(
            plan.session_id
        ):
            return Rejected(
                reason="not_yours",
                detail=f"conversation {conversation_id} is another person's",
            )
        if conversation_id:
            info = await self.js.stream_info(
                subjects.STREAM, subjects_filter=subjects.turns(conversation_id)
            )
            turns = await conversation(self.nc, conversation_id) if info.state.subjects else []
            if not turns:
                return Rejected(
                    reason="unknown_conversation",
                    detail=f"{conversation_id}: no finished turn of that conversation is stored",
                )
        kept, dropped = prompts.within_budget(turns, self.config.history_tokens)
        earlier = [d for turn in reversed(turns) for d in turn.documents]
        own, carried, left_out = prompts.documents_within(
            documents, earlier, self.config.document_tokens
        )
        return msgspec.structs.replace(
            plan,
            conversation=conversation_id or plan.session_id,
            history=kept,
            history_dropped=[t.session_id or f"turn {i + 1}" for i, t in enumerate(dropped)],
            documents=own,
            conversation_documents=carried,
            documents_dropped=left_out,
        )
