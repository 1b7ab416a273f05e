"""A session's state machine, driven only by its events: the one fold of them.

The chairman's conductor records every step as an event and applies it here,
so the same ``apply`` rebuilds a session from the COUNCIL stream after a
restart. Every reader (``council ask``, ``council chat``, the API, the
dashboard) follows a session through the same fold, leniently
(``FollowedSession``), and reads its progress from it.

    STARTED ─▶ OPINIONS ─▶ REVIEWS ─▶ SYNTHESIS ─▶ DONE
       └──────────┴───────────┴───────────┴──────▶ FAILED or CANCELLED
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from council.bus.events import (
    AgentLost,
    FinalAnswer,
    MemberFailed,
    Opinion,
    Ranking,
    Review,
    ReviewFailed,
    SessionCancelled,
    SessionEvent,
    SessionFailed,
    SessionQueued,
    SessionStarted,
    StageStarted,
)

log = structlog.get_logger()
STAGES = ("opinions", "reviews", "synthesis")


class State(StrEnum):
    NEW = "new"
    STARTED = "started"
    OPINIONS = "opinions"
    REVIEWS = "reviews"
    SYNTHESIS = "synthesis"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = {State.DONE, State.FAILED, State.CANCELLED}

_NEXT_STAGE = {
    ("opinions", State.STARTED): State.OPINIONS,
    ("reviews", State.OPINIONS): State.REVIEWS,
    ("synthesis", State.REVIEWS): State.SYNTHESIS,
}


class InvalidTransition(Exception):
    def __init__(self, state: State, event: SessionEvent) -> None:
        super().__init__(f"{type(event).__name__} (seq {event.seq}) not allowed in state {state}")
        self.state = state
        self.event = event


@dataclass
class SessionState:
    session_id: str
    state: State = State.NEW
    seq: int = 0
    started: SessionStarted | None = None
    opinions: dict[str, Opinion] = field(default_factory=dict)
    failures: dict[str, MemberFailed] = field(default_factory=dict)
    reviews: list[Review] = field(default_factory=list)
    review_failures: list[ReviewFailed] = field(default_factory=list)
    lost: list[AgentLost] = field(default_factory=list)
    ranking: Ranking | None = None
    outcome: FinalAnswer | SessionFailed | None = None
    expected: dict[str, int] = field(default_factory=dict)
    """Per stage begun, how many replies it asked for (``reviews: 0``: skipped)."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Per stage begun, why it runs as it does (or asks nothing)."""
    stages: dict[str, StageStarted] = field(default_factory=dict)
    """Per stage begun, the event that began it (a skipped reviews stage names who stood)."""
    queued: SessionQueued | None = None
    """The session waited for a slot: how many were ahead of it."""

    @classmethod
    def rebuild(cls, session_id: str, events: list[SessionEvent]) -> SessionState:
        state = cls(session_id)
        for event in sorted(events, key=lambda e: e.seq):
            state.apply(event)
        return state

    @property
    def reviews_skipped(self) -> bool:
        """No review was asked: a majority agreed, the member was asked alone, or only
        one member answered. Then an opinion stands as the answer, unsynthesized."""
        return self.expected.get("reviews") == 0

    @property
    def final(self) -> FinalAnswer | None:
        return self.outcome if isinstance(self.outcome, FinalAnswer) else None

    @property
    def failed(self) -> SessionFailed | None:
        return self.outcome if isinstance(self.outcome, SessionFailed) else None

    @property
    def answered(self) -> list[str]:
        """Members with an opinion, in the session's member order."""
        members = self.started.plan.members if self.started else []
        return [m for m in members if m in self.opinions]

    def apply(self, event: SessionEvent) -> None:
        if event.session_id != self.session_id or event.seq != self.seq + 1:
            raise InvalidTransition(self.state, event)
        if self.state in TERMINAL:
            raise InvalidTransition(self.state, event)
        match event:
            case SessionStarted() if self.state is State.NEW:
                self.started = event
                self.state = State.STARTED
            case SessionQueued() if self.state is State.STARTED:
                self.queued = event
            case StageStarted() if (event.stage, self.state) in _NEXT_STAGE:
                self.state = _NEXT_STAGE[(event.stage, self.state)]
                self.expected[event.stage] = event.expected
                self.reasons[event.stage] = event.reason
                self.stages[event.stage] = event
            case Opinion() if self.state is State.OPINIONS:
                self.opinions[event.member] = event
            case MemberFailed() if self.state in (State.OPINIONS, State.REVIEWS):
                self.failures[event.member] = event
            case AgentLost() if self.state in (State.OPINIONS, State.REVIEWS, State.SYNTHESIS):
                self.lost.append(event)
            case Review() if self.state is State.REVIEWS:
                self.reviews.append(event)
            case ReviewFailed() if self.state is State.REVIEWS:
                self.review_failures.append(event)
            case Ranking() if self.state is State.REVIEWS:
                self.ranking = event
            case FinalAnswer() if self.state is State.SYNTHESIS:
                self.outcome = event
                self.state = State.DONE
            case SessionCancelled():
                self.outcome = event
                self.state = State.CANCELLED
            case SessionFailed():
                self.outcome = event
                self.state = State.FAILED
            case _:
                raise InvalidTransition(self.state, event)
        self.seq = event.seq

    def progress(self) -> dict[str, tuple[int, int]]:
        """Per stage: its calls done (failures count as done) and expected (0 for a
        stage not begun or skipped: ``expected`` holds the stages begun). A rank-mode
        review call yields one review per other member, so reviews are counted by
        reviewer there."""
        rank_mode = self.started is not None and self.started.plan.mode == "rank"
        reviews = len({r.reviewer for r in self.reviews}) if rank_mode else len(self.reviews)
        done = {
            "opinions": len(self.opinions) + len(self.failures),
            "reviews": reviews + len(self.review_failures),
            "synthesis": int(self.final is not None),
        }
        return {
            stage: (done[stage], self.expected[stage]) for stage in STAGES if stage in self.expected
        }

    def progress_line(self) -> str:
        """The stages begun, on one line: "opinions 3/3 · reviews skipped" (or the
        session's place while it waits for a slot)."""
        if self.queued is not None and not self.expected:
            return f"queued: {self.queued.ahead} ahead"
        return " · ".join(
            f"{stage} {done}/{expected}" if expected else f"{stage} skipped"
            for stage, (done, expected) in self.progress().items()
            if stage in self.expected
        )


@dataclass
class FollowedSession(SessionState):
    """A session as a reader follows it: the same fold, read leniently, since a reader
    must keep going where the chairman would stop."""

    events: list[SessionEvent] = field(default_factory=list)
    """The events applied, in order."""
    early: dict[int, SessionEvent] = field(default_factory=dict)
    """Events stored ahead of their turn (one confirmed late after an outage), kept
    until the gap before them fills."""

    def follow(self, event: SessionEvent) -> list[SessionEvent]:
        """The events that this one lets the fold apply, in order: none for one
        redelivered, held ahead of its turn or unable to follow (logged); itself and
        the held events it unblocks otherwise."""
        if event.seq <= self.seq:
            return []
        if event.seq > self.seq + 1:
            self.early[event.seq] = event
            return []
        try:
            self.apply(event)
        except InvalidTransition as exc:
            log.warning("session_event_skipped", session_id=self.session_id, error=str(exc))
            return []
        self.events.append(event)
        following = self.early.pop(self.seq + 1, None)
        return [event, *(self.follow(following) if following is not None else [])]
