"""What the dashboard knows of a session: the contract's fold of its events, read
leniently, plus the text streamed live (no Streamlit here)."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from council.bus.messages import SessionEvent, TokenDelta
from council.bus.session import InvalidTransition, SessionState, State

log = structlog.get_logger()


@dataclass
class SessionView(SessionState):
    events: list[SessionEvent] = field(default_factory=list)
    live: dict[tuple[str, str], str] = field(default_factory=dict)
    """Streamed text so far per (stage, member): live only, never stored."""
    early: dict[int, SessionEvent] = field(default_factory=dict)
    """Events stored ahead of their turn (one confirmed late after an outage), kept
    until the gap before them fills."""

    def apply(self, event: SessionEvent) -> None:
        """As the chairman folds it: a redelivered event is skipped, one ahead of its
        turn waits for the gap to fill, and one that cannot follow is logged and
        skipped."""
        if event.seq <= self.seq:
            return
        if event.seq > self.seq + 1:
            self.early[event.seq] = event
            return
        try:
            super().apply(event)
        except InvalidTransition as exc:
            log.warning("session_event_skipped", session_id=self.session_id, error=str(exc))
            return
        self.events.append(event)
        if (following := self.early.pop(self.seq + 1, None)) is not None:
            self.apply(following)

    @property
    def question(self) -> str:
        return self.started.question if self.started else ""

    @property
    def conversation(self) -> str:
        """The conversation this session is a turn of (its own id for a first turn)."""
        return (
            self.started.conversation
            if self.started and self.started.conversation
            else self.session_id
        )

    @property
    def started_at(self) -> float:
        return self.started.ts if self.started else (self.events[0].ts if self.events else 0.0)

    @property
    def stage(self) -> str:
        return self.state.value

    @property
    def status(self) -> str:
        if self.state is State.CANCELLED:
            return "stopped"
        if self.failed:
            return f"failed: {self.failed.reason}"
        return self.stage

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def add_delta(self, delta: TokenDelta) -> None:
        key = (delta.stage, delta.member)
        self.live[key] = self.live.get(key, "") + delta.text

    def progress(self) -> dict[str, tuple[int, int]]:
        """Done and expected calls per stage, failures counted as done."""
        rank_mode = self.started is not None and self.started.mode == "rank"
        # a rank-mode call yields one review per other member; a pairwise call yields one
        reviews_done = len({r.reviewer for r in self.reviews}) if rank_mode else len(self.reviews)
        return {
            "opinions": (len(self.opinions) + len(self.failures), self.expected.get("opinions", 0)),
            "reviews": (
                reviews_done + len(self.review_failures),
                self.expected.get("reviews", 0),
            ),
            "synthesis": (int(self.final is not None), self.expected.get("synthesis", 0)),
        }

    def score_matrix(self) -> dict[str, dict[str, float]]:
        """reviewer → reviewed → raw score."""
        matrix: dict[str, dict[str, float]] = {}
        for r in self.reviews:
            matrix.setdefault(r.reviewer, {})[r.reviewed] = r.score
        return matrix
