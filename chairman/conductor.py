"""Runs one session through its three stages, recording each step as an event.

Talks to agents through an ``AgentGateway`` (the bus in production, plain
functions in tests) and emits events through a sink; knows no NATS. Each stage
is a module of its own (``opinions``, ``reviews``, ``conclusion``) over what
they share (``core``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from council.bus.events import (
    AgentLost,
    FinalAnswer,
    SessionFailed,
    SessionQueued,
    SessionStarted,
)
from council.bus.session import State
from council.chairman.conclusion import ConclusionStage
from council.chairman.core import ms_since
from council.chairman.opinions import OpinionsStage
from council.chairman.reviews import ReviewsStage

R = TypeVar("R")


class Conductor(OpinionsStage, ReviewsStage, ConclusionStage):
    """A session, run from its plan or from the events of one rebuilt."""

    async def agent_lost(self, member: str, node: str, reissued: bool) -> None:
        stage = self.state.state.value
        if stage not in ("opinions", "reviews", "synthesis"):
            return
        await self.record(
            AgentLost(
                session_id=self.plan.session_id,
                member=member,
                stage=stage,  # type: ignore[arg-type]
                node=node or "unknown",
                detail=f"no word from the agent for {self.config.agent_silence_s:g} s",
                reissued=reissued,
            )
        )

    async def begin(self) -> None:
        """Record the session's start (once: a rebuilt session has begun already)."""
        if self.state.state is State.NEW:
            await self.record(
                SessionStarted(
                    session_id=self.plan.session_id,
                    plan=self.plan,
                    quorum=self.config.quorum,
                    labels={label: member for member, label in self.labels.items()},
                    owner=self.owner,
                )
            )

    async def queued(self, ahead: int) -> None:
        """The session waits for a slot (its person's fair share): say how long the line is."""
        if self.state.state is State.STARTED:
            await self.record(SessionQueued(session_id=self.plan.session_id, ahead=ahead))

    async def run(self) -> FinalAnswer | SessionFailed:
        """Run the session, or finish a rebuilt one from the stage it had reached."""
        started = time.perf_counter()
        plan = self.plan
        await self.begin()
        try:
            if self.state.state in (State.STARTED, State.OPINIONS):
                await self._stage("opinions", self._opinions)
                answered = self.state.answered
                if len(answered) < (1 if plan.alone else self.config.quorum):
                    why = "; ".join(f"{f.member}: {f.reason}" for f in self.state.failures.values())
                    return await self._fail(
                        "quorum_not_met",
                        f"{len(answered)} of {len(plan.members)} members answered; "
                        f"quorum is {self.config.quorum}" + (f" ({why})" if why else ""),
                        "opinions",
                    )
            if self.state.state in (State.OPINIONS, State.REVIEWS):
                await self._stage("reviews", self._reviews)
            final = await self._stage("synthesis", self._conclude)
            self.latency_ms["total"] = ms_since(started)
            final.latency_ms = {k: round(v, 1) for k, v in self.latency_ms.items()}
            await self.record(final)
            return final
        except Exception as exc:
            self.log.exception("session_crashed")
            return await self._fail("internal_error", repr(exc), self.state.state.value)

    async def _stage(self, name: str, body: Callable[[], Coroutine[Any, Any, R]]) -> R:
        started = time.perf_counter()
        self.log.info("stage_started", stage=name)
        result = await body()
        self.latency_ms[name] = ms_since(started)
        self.log.info("stage_finished", stage=name, ms=round(self.latency_ms[name]))
        return result

    async def _fail(self, reason: str, detail: str, stage: str) -> SessionFailed:
        self.log.warning("session_failed", reason=reason, detail=detail)
        failed = SessionFailed(
            session_id=self.plan.session_id, reason=reason, detail=detail, stage=stage
        )
        await self.record(failed)
        return failed
