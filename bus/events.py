"""The session events: each step of a session, stored in the COUNCIL stream on
``council.session.<sid>.<kind>`` and folded by every reader (``bus.session``).
Part of the wire contract (``bus.messages``' evolution rules hold here too)."""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

from council.bus.messages import (
    SCHEMA_VERSION,
    AgentErrorCode,
    Document,
    ReviewMode,
    Stage,
    Turn,
    Usage,
    now,
)

# --- council.session.<sid>.<kind> (stream COUNCIL) --------------------------


class Event(Struct, kw_only=True, tag_field="type"):
    """Header every session event carries; ``seq`` is gap-free per session."""

    session_id: str
    seq: int = 0
    ts: float = msgspec.field(default_factory=now)
    v: int = SCHEMA_VERSION


class SessionPlan(Struct, kw_only=True, frozen=True):
    """A validated question as the chairman runs it: recorded whole in
    ``session_started``, so that a resumed session runs the plan it began with."""

    session_id: str
    question: str
    members: list[str]
    chairman: str
    mode: ReviewMode
    seed: int
    strategy: str = ""
    """The strategy in force: the question's choice, else the chairman's setting."""
    temperature: float | None = None
    alone: bool = False
    """One member asked alone: stage 1 only, its opinion is the answer."""
    max_tokens: int | None = None
    """Tokens per opinion, instead of the configured cap."""
    conversation: str = ""
    history: list[Turn] = []
    """The conversation's earlier turns every stage sees, oldest first."""
    history_dropped: list[str] = []
    """Sessions of older turns left out to keep the history within its token budget."""
    remember: bool = True
    """Whether the answer becomes a turn of its conversation (``Question.remember``)."""
    preset: str = ""
    """The named council the question asked for ("" for the chairman's defaults)."""
    documents: list[Document] = []
    """The files the question carries, as every stage sees them: cut at the end where
    they pass the document budget (``Document.cut``); its turn keeps them so."""
    conversation_documents: list[Document] = []
    """Files of the conversation's earlier turns every stage sees too (newest first)."""
    documents_dropped: list[str] = []
    """Files of the conversation left out whole: the budget was spent on newer ones."""


class SessionStarted(Event, tag="session_started"):
    plan: SessionPlan
    quorum: int
    labels: dict[str, str] = {}
    """Anonymous label → member, fixed for the session (the chairman model sees labels only)."""
    owner: str = ""
    """The chairman node running the session: only it resumes the session after a restart."""


class SessionQueued(Event, tag="session_queued"):
    """The session waits for a slot of its chairman: its person's fair share is in use,
    or every slot is. Its first stage begins when its turn comes."""

    ahead: int
    """Sessions that will start before it, as things stood when it was queued."""


class StageStarted(Event, tag="stage_started"):
    stage: Stage
    expected: int
    reason: str = ""
    """Why the stage runs as it does, for people: "the members disagree (3 answers)",
    or why it asks nothing ("all 3 members answered 42")."""
    stood: list[str] = []
    """The reviews stage skipped: the members whose answer stood without them (the first
    is the one given)."""
    how: Literal["", "select", "vote", "synthesize"] = ""
    """The reviews stage skipped: how the answer that stood is given."""


class Opinion(Event, tag="opinion"):
    member: str
    model: str
    label: str
    text: str
    usage: Usage
    latency_ms: float
    conclusion: str = ""
    """The answer its final-answer line states, apart from the working in ``text``;
    "" when it states none (a working cut off by the token cap)."""


class MemberFailed(Event, tag="member_failed"):
    member: str
    stage: Stage
    reason: AgentErrorCode
    detail: str = ""


class AgentLost(Event, tag="agent_lost"):
    """The agent working on a member's request went silent (its process died, or the
    network or server failed); the request was asked again when ``reissued``."""

    member: str
    stage: Stage
    node: str
    detail: str
    reissued: bool


class Review(Event, tag="review"):
    reviewer: str
    reviewed: str
    score: float
    justification: str
    usage: Usage
    latency_ms: float
    mode: ReviewMode = "pairwise"
    repaired: bool = False
    computed: str = ""
    """In ``compute`` mode: the answer the reviewer's own program printed."""


class ReviewFailed(Event, tag="review_failed"):
    reviewer: str
    reviewed: list[str]
    reason: AgentErrorCode
    detail: str = ""


class RankEntry(Struct, kw_only=True):
    member: str
    label: str
    rank: int
    score: float
    """Mean of per-reviewer normalized (z) scores; 0 is the council's average."""
    raw_mean: float
    spread: float
    reviews: int
    margin: float
    """Lead over the next member; 0 inside a tie."""
    tied: bool = False


class Ranking(Event, tag="ranking"):
    entries: list[RankEntry]
    ties: list[list[str]] = []
    tie_break: str = ""


class MemberSummary(Struct, kw_only=True):
    member: str
    model: str
    usage: Usage
    latency_ms: float


class ReviewSummary(Struct, kw_only=True):
    reviewer: str
    reviewed: str
    model: str
    score: float
    usage: Usage
    latency_ms: float


class Failure(Struct, kw_only=True):
    member: str
    stage: Stage
    reason: AgentErrorCode
    detail: str = ""


class FinalAnswer(Event, tag="final_answer"):
    answer: str
    chairman: str
    ranking: list[RankEntry]
    opinions: list[MemberSummary]
    reviews: list[ReviewSummary]
    failed: list[Failure]
    usage: dict[str, Usage]
    """Per stage: opinions, reviews, synthesis, total."""
    usage_by_model: dict[str, Usage]
    latency_ms: dict[str, float]
    """Wall clock per stage and ``total``."""
    strategy: Literal["synthesize", "select", "vote"] = "synthesize"
    """How the answer was made: ``synthesize`` (the chairman's model wrote it), or
    ``select``/``vote`` (a member's opinion, named in ``selected``)."""
    selected: str = ""
    fallback: str = ""
    """Why the chairman's model did not write the answer when it should have (its
    error); the answer is then the top-ranked opinion."""
    reviews_skipped: bool = False
    """Stage 2 was skipped because the members' answers already agreed."""
    conclusion: str = ""
    """The answer's final-answer line, apart from the rest of ``answer``."""


class SessionFailed(Event, tag="session_failed"):
    reason: str
    detail: str = ""
    stage: str = ""


class SessionCancelled(SessionFailed, tag="session_cancelled"):
    """A client stopped the session (``council.stop``): it ends without an answer, and
    its agents stop the calls still running. A kind of failed session to readers that
    know no better."""


SessionEvent = (
    SessionStarted
    | SessionQueued
    | StageStarted
    | Opinion
    | MemberFailed
    | AgentLost
    | Review
    | ReviewFailed
    | Ranking
    | FinalAnswer
    | SessionFailed
    | SessionCancelled
)

TERMINAL_EVENTS = (FinalAnswer, SessionFailed, SessionCancelled)


def event_kind(event: Event | type[Event]) -> str:
    """The subject suffix of an event (or event type): its tag."""
    kind = event if isinstance(event, type) else type(event)
    return str(kind.__struct_config__.tag)
