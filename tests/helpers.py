"""Test helpers: agents called in-process (no bus), and event collection."""

from __future__ import annotations

from council.agents import handlers
from council.agents.runtimes.base import Runtime
from council.bus.messages import (
    AgentError,
    Completion,
    OpinionRequest,
    ReviewRequest,
    ReviewResult,
    SessionEvent,
    SynthesisRequest,
)


class LocalAgents:
    """The conductor's AgentGateway, served by the real handlers on a runtime, no bus."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.requests: list[OpinionRequest | ReviewRequest | SynthesisRequest] = []

    async def opinion(self, request: OpinionRequest) -> Completion | AgentError:
        self.requests.append(request)
        return await handlers.handle_opinion(self.runtime, request)

    async def review(self, request: ReviewRequest) -> ReviewResult | AgentError:
        self.requests.append(request)
        return await handlers.handle_review(self.runtime, request)

    async def synthesize(self, request: SynthesisRequest) -> Completion | AgentError:
        self.requests.append(request)
        return await handlers.handle_synthesis(self.runtime, request)


class Collected:
    """An event sink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    async def __call__(self, event: SessionEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]
