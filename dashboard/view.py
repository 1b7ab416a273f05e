"""What the dashboard knows of a session, built from its events alone (no Streamlit here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from council.bus.messages import (
    AgentLost,
    FinalAnswer,
    MemberFailed,
    Opinion,
    Ranking,
    Review,
    ReviewFailed,
    SessionEvent,
    SessionFailed,
    SessionStarted,
    StageStarted,
    TokenDelta,
)


@dataclass
class SessionView:
    session_id: str
    events: list[SessionEvent] = field(default_factory=list)
    started: SessionStarted | None = None
    expected: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    """Per stage begun, why it runs as it does (or asks nothing)."""
    stage: str = "new"
    opinions: dict[str, Opinion] = field(default_factory=dict)
    failures: dict[str, MemberFailed] = field(default_factory=dict)
    reviews: list[Review] = field(default_factory=list)
    review_failures: list[ReviewFailed] = field(default_factory=list)
    lost: list[AgentLost] = field(default_factory=list)
    ranking: Ranking | None = None
    final: FinalAnswer | None = None
    failed: SessionFailed | None = None
    live: dict[tuple[str, str], str] = field(default_factory=dict)
    """Streamed text so far per (stage, member): live only, never stored."""

    @property
    def question(self) -> str:
        return self.started.question if self.started else ""

    @property
    def started_at(self) -> float:
        return self.started.ts if self.started else (self.events[0].ts if self.events else 0.0)

    @property
    def status(self) -> str:
        if self.final:
            return "done"
        if self.failed:
            return f"failed: {self.failed.reason}"
        return self.stage

    @property
    def finished(self) -> bool:
        return self.final is not None or self.failed is not None

    def apply(self, event: SessionEvent) -> None:
        if any(e.seq == event.seq for e in self.events[-3:]):
            return  # a redelivery
        self.events.append(event)
        match event:
            case SessionStarted():
                self.started = event
                self.stage = "started"
            case StageStarted(stage=stage, expected=expected, reason=reason):
                self.expected[stage] = expected
                self.reasons[stage] = reason
                self.stage = stage
            case Opinion():
                self.opinions[event.member] = event
            case MemberFailed():
                self.failures[event.member] = event
            case Review():
                self.reviews.append(event)
            case ReviewFailed():
                self.review_failures.append(event)
            case AgentLost():
                self.lost.append(event)
            case Ranking():
                self.ranking = event
            case FinalAnswer():
                self.final = event
                self.stage = "done"
            case SessionFailed():
                self.failed = event
                self.stage = "failed"

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
