"""The conductor's agents, reached over NATS request/reply on ``council.agent.>``."""

from __future__ import annotations

from typing import TypeVar

import nats.errors
from nats.aio.client import Client

from council.bus import subjects
from council.bus.client import decode, encode
from council.bus.client import request as bus_request
from council.bus.errors import InvalidMessage
from council.bus.messages import (
    AgentError,
    AgentReply,
    AgentRequest,
    Completion,
    OpinionRequest,
    ReviewRequest,
    ReviewResult,
    SynthesisRequest,
)

R = TypeVar("R", Completion, ReviewResult)
GRACE_S = 2.0


class BusAgents:
    def __init__(self, nc: Client, *, grace_s: float = GRACE_S) -> None:
        self.nc = nc
        self.grace_s = grace_s

    async def opinion(self, request: OpinionRequest) -> Completion | AgentError:
        return await self._request(request, "opinion", Completion)

    async def review(self, request: ReviewRequest) -> ReviewResult | AgentError:
        return await self._request(request, "review", ReviewResult)

    async def synthesize(self, request: SynthesisRequest) -> Completion | AgentError:
        return await self._request(request, "synthesize", Completion)

    async def _request(self, request: AgentRequest, kind: str, expected: type[R]) -> R | AgentError:
        subject = subjects.agent(request.model, kind)
        try:
            msg = await bus_request(
                self.nc, subject, encode(request), timeout_s=request.timeout_s + self.grace_s
            )
        except nats.errors.NoRespondersError:
            return AgentError(
                code="no_responders", detail=f"no agent serves {request.model} on {subject}"
            )
        except nats.errors.TimeoutError:
            # Behind a wildcard subscriber "no responders" also looks like this.
            return AgentError(code="timeout", detail=f"no reply on {subject} in time")
        try:
            reply = decode(AgentReply, msg.data, subject)
        except InvalidMessage as exc:
            return AgentError(code="invalid_output", detail=f"unreadable agent reply: {exc.detail}")
        if isinstance(reply, AgentError | expected):
            return reply
        return AgentError(code="invalid_output", detail=f"unexpected {type(reply).__name__}")
