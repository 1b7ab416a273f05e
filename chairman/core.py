"""What every stage of a session shares: its plan, config and state, the agents and
tools it asks, and recording an event (applied to the fold, then stored)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Protocol, TypeAlias, TypeVar

import msgspec
import structlog

from council.bus.events import SessionEvent, SessionPlan
from council.bus.messages import (
    AgentError,
    Completion,
    GenerationOptions,
    OpinionRequest,
    ReviewRequest,
    ReviewResult,
    SynthesisRequest,
)
from council.bus.session import SessionState, State
from council.chairman import prompts, strategies
from council.chairman.compute import NoTools, ToolGateway
from council.chairman.config import CouncilConfig
from council.chairman.strategies import Stands

log = structlog.get_logger()

R = TypeVar("R")


class AgentGateway(Protocol):
    async def opinion(self, request: OpinionRequest) -> Completion | AgentError: ...

    async def review(self, request: ReviewRequest) -> ReviewResult | AgentError: ...

    async def synthesize(self, request: SynthesisRequest) -> Completion | AgentError: ...


EventSink = Callable[[SessionEvent], Awaitable[None]]

Plan: TypeAlias = SessionPlan
"""What a session runs: the protocol's struct, recorded whole when the session starts."""


class SessionCore:
    """A session in the making; the stages (``opinions``, ``reviews``, ``conclusion``)
    are its methods, in modules of their own."""

    def __init__(
        self,
        plan: Plan,
        config: CouncilConfig,
        agents: AgentGateway,
        sink: EventSink,
        *,
        owner: str = "",
        state: SessionState | None = None,
        tools: ToolGateway | None = None,
    ) -> None:
        """``state``: a session rebuilt from its events, to finish what it had left;
        ``tools``: the sandbox that computing members' programs run in."""
        self.config = config
        chosen = plan.strategy if plan.strategy in strategies.STRATEGIES else strategies.DEFAULT
        self.strategy = strategies.named(chosen, close_margin=config.close_margin)
        self.plan = msgspec.structs.replace(plan, strategy=self.strategy.name)
        """The plan with the strategy in force, recorded so that a resumed session
        concludes as it began, whatever the chairman's setting is by then."""
        self.agents = agents
        self.tools = tools or NoTools()
        self.sink = sink
        self.owner = owner
        self.state = state or SessionState(plan.session_id)
        self._recording = asyncio.Lock()
        self.labels = dict(zip(plan.members, prompts.labels_for(len(plan.members)), strict=True))
        self.latency_ms: dict[str, float] = {}
        self.log = log.bind(session_id=plan.session_id)

    async def record(self, event: SessionEvent) -> None:
        """Apply and store one event; the lock keeps the stream in seq order."""
        async with self._recording:
            event.seq = self.state.seq + 1
            self.state.apply(event)
            await self.sink(event)

    def _options(self, member: str, max_tokens: int, temperature: float) -> GenerationOptions:
        index = self.plan.members.index(member) if member in self.plan.members else 99
        return GenerationOptions(
            temperature=temperature, seed=self.plan.seed + index, max_tokens=max_tokens
        )

    def _texts(self) -> dict[str, str]:
        """Each answered member's opinion, in member order; a member stopped as not
        needed counts as one who gave no answer (a majority stood without it)."""
        opinions, failures = self.state.opinions, self.state.failures
        return {
            m: opinions[m].text if m in opinions else ""
            for m in self.plan.members
            if m in opinions or (m in failures and failures[m].reason == "not_needed")
        }

    def _stands(self) -> Stands | None:
        """The answer that stands without reviews: decided by the strategy right after
        the opinions, and recorded when the reviews stage begins (who stood, how), so
        that a resumed session reads the decision it made instead of deriving it anew."""
        plan, state = self.plan, self.state
        if plan.alone:
            return Stands(state.answered, "select", "asked alone")
        if state.state is State.OPINIONS:
            return self.strategy.stands(self._texts(), plan.chairman)
        begun = state.stages.get("reviews")
        if begun is None or not begun.stood:
            return None
        return Stands(begun.stood, begun.how or "vote", begun.reason)

    def _unreviewed(self) -> Stands:
        """What stands when nobody can review (one member answered, or every reviewer
        weighs 0): the chairman's model's own answer, else the first answer."""
        fallback = strategies.STRATEGIES["majority-or-chairman"]
        stands = fallback.stands(self._texts(), self.plan.chairman)
        return stands or Stands(self.state.answered[:1], "vote", "only one member answered")


async def until(
    deadline: float, calls: Mapping[str, Awaitable[R]]
) -> AsyncGenerator[tuple[str, R | None], None]:
    """Yield (key, reply) as calls finish; at the deadline, (key, None) for the rest."""
    tasks = {asyncio.ensure_future(call): key for key, call in calls.items()}
    pending = set(tasks)
    try:
        while pending:
            timeout = max(0.0, deadline - time.monotonic())
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            for task in done:
                yield tasks[task], task.result()
        for task in pending:
            task.cancel()
            yield tasks[task], None
    finally:
        for task in pending:
            task.cancel()


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
