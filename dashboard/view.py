"""What the dashboard knows of a session: the contract's fold of its events, as every
reader follows it, plus the text streamed live (no Streamlit here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from council.bus.messages import TokenDelta
from council.bus.session import FollowedSession, State


@dataclass
class SessionView(FollowedSession):
    live: dict[tuple[str, str], str] = field(default_factory=dict)
    """Streamed text so far per (stage, member): live only, never stored."""

    @property
    def question(self) -> str:
        return self.started.plan.question if self.started else ""

    @property
    def conversation(self) -> str:
        """The conversation this session is a turn of (its own id for a first turn)."""
        return (
            self.started.plan.conversation
            if self.started and self.started.plan.conversation
            else self.session_id
        )

    @property
    def remembered(self) -> bool:
        """Whether it is a turn of a conversation (a measurement's sessions are not)."""
        return self.started.plan.remember if self.started else True

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
        """Live text, marked "… " where it began before this feed followed it."""
        key = (delta.stage, delta.member)
        missed = "… " if key not in self.live and delta.index > 0 else ""
        self.live[key] = self.live.get(key, missed) + delta.text

    def score_matrix(self) -> dict[str, dict[str, float]]:
        """reviewer → reviewed → raw score."""
        matrix: dict[str, dict[str, float]] = {}
        for r in self.reviews:
            matrix.setdefault(r.reviewer, {})[r.reviewed] = r.score
        return matrix


def threads(views: list[SessionView]) -> dict[str, list[SessionView]]:
    """Sessions by conversation, each thread oldest first, the newest thread first
    (without the sessions of a measurement, such as `council eval`'s)."""
    grouped: dict[str, list[SessionView]] = {}
    for view in sorted(filter(lambda v: v.remembered, views), key=lambda v: v.started_at):
        grouped.setdefault(view.conversation, []).append(view)
    return dict(sorted(grouped.items(), key=lambda kv: -kv[1][-1].started_at))
