"""A council wired in one process: agents and a chairman on the connections given.

`council agents`, `council chairman` and `council up`, the benchmarks and the
tests all build the roles here, so an option of a role is wired in one place.
``LocalAgents`` serves the conductor's agent calls in-process, with no bus, and
``LocalTools`` its programs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

from council.agents import handlers
from council.agents.runtimes.base import Runtime
from council.agents.runtimes.router import RoutedRuntime
from council.agents.service import AgentOptions, AgentService
from council.bus import subjects
from council.bus.messages import (
    AgentError,
    Completion,
    OpinionRequest,
    ProgramResult,
    ReviewRequest,
    ReviewResult,
    RunProgram,
    SynthesisRequest,
)
from council.bus.transport.health import Health
from council.chairman.admission import Defaults
from council.chairman.config import CouncilConfig
from council.chairman.service import ChairmanService
from council.tools.sandbox import Sandbox


async def start_agents(
    nc: Client,
    runtime: RoutedRuntime,
    *,
    node: str,
    kinds: tuple[str, ...] = subjects.AGENT_KINDS,
    concurrency: int = AgentOptions.concurrency,
    heartbeat_s: float = Health.heartbeat,
) -> AgentService:
    service = AgentService(
        nc,
        runtime,
        models=runtime.models,
        node=node,
        kinds=kinds,
        concurrency=concurrency,
        heartbeat_s=heartbeat_s,
    )
    await service.start()
    return service


async def start_chairman(
    nc: Client,
    defaults: Defaults,
    config: CouncilConfig | None = None,
    *,
    node: str,
    **options: Any,
) -> ChairmanService:
    """``options``: the rest of ChairmanService's keywords (max_sessions, heartbeat_s, ...)."""
    service = ChairmanService(
        nc, defaults=defaults, config=config or CouncilConfig(), node=node, **options
    )
    await service.start()
    return service


@dataclass(frozen=True)
class LocalCouncil:
    agents: AgentService
    chairman: ChairmanService


@asynccontextmanager
async def local_council(
    agents_nc: Client,
    chairman_nc: Client,
    runtime: RoutedRuntime,
    defaults: Defaults,
    config: CouncilConfig | None = None,
    *,
    concurrency: int = AgentOptions.concurrency,
    heartbeat_s: float = Health.heartbeat,
    **chairman_options: Any,
) -> AsyncIterator[LocalCouncil]:
    """Agents serving ``runtime``, then a chairman: both started, and stopped on exit
    (the connections stay the caller's)."""
    agents = await start_agents(
        agents_nc, runtime, node="agents", concurrency=concurrency, heartbeat_s=heartbeat_s
    )
    try:
        chairman = await start_chairman(
            chairman_nc, defaults, config, node="chairman", heartbeat_s=heartbeat_s,
            **chairman_options,
        )  # fmt: skip
        try:
            yield LocalCouncil(agents, chairman)
        finally:
            await chairman.stop()
    finally:
        await agents.stop()


class LocalAgents:
    """The conductor's agent gateway served by the real handlers on a runtime, no bus.
    With ``keep_requests`` it keeps what it was asked (tests read it; long benchmark
    runs must not grow)."""

    def __init__(self, runtime: Runtime, *, keep_requests: bool = False) -> None:
        self.runtime = runtime
        self.keep_requests = keep_requests
        self.requests: list[OpinionRequest | ReviewRequest | SynthesisRequest] = []

    def _asked(self, request: OpinionRequest | ReviewRequest | SynthesisRequest) -> None:
        if self.keep_requests:
            self.requests.append(request)

    async def opinion(self, request: OpinionRequest) -> Completion | AgentError:
        self._asked(request)
        return await handlers.handle_opinion(self.runtime, request)

    async def review(self, request: ReviewRequest) -> ReviewResult | AgentError:
        self._asked(request)
        return await handlers.handle_review(self.runtime, request)

    async def synthesize(self, request: SynthesisRequest) -> Completion | AgentError:
        self._asked(request)
        return await handlers.handle_synthesis(self.runtime, request)


class LocalTools:
    """The conductor's tool gateway served by a sandbox in this process, no bus."""

    def __init__(self, sandbox: Sandbox | None = None) -> None:
        self.sandbox = sandbox or Sandbox()
        self.programs: list[str] = []

    async def run(self, program: RunProgram) -> ProgramResult:
        self.programs.append(program.code)
        return await self.sandbox.run(program.code)
