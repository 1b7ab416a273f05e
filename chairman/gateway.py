"""The conductor's agents, reached over NATS on ``council.agent.>``, with takeover.

An agent answers ``Working`` on receipt and every second until its reply. When a
request goes silent for ``silence_s`` (the agent's process died, or the network
or the server went away), it is asked again: the queue group hands it to another
agent serving the model. ``on_lost`` hears of each silent agent, so the session
records it as a named event.

When several agents serve a model, a request first goes to the least busy of
them by name (what each last said it had taken, plus what was sent to it
since), and to the queue group if that one is gone: a queue group alone hands
requests out at random, so a busy agent would get its share while another idles.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client

from council.bus import subjects
from council.bus.client.roster import Roster
from council.bus.codec import decode_agent_response, decode_program_result, encode
from council.bus.errors import InvalidMessage
from council.bus.messages import (
    AgentError,
    AgentReply,
    AgentRequest,
    CancelCalls,
    Completion,
    OpinionRequest,
    ProgramResult,
    ReviewRequest,
    ReviewResult,
    RunProgram,
    SynthesisRequest,
    Working,
)
from council.bus.transport import connection
from council.bus.transport.inbox import ReplyInbox, Settling, is_no_responders

log = structlog.get_logger()

R = TypeVar("R", Completion, ReviewResult)
GRACE_S = 2.0
SILENCE_S = 15.0
FIRST_WORD_S = 5.0
"""An agent says ``Working`` a quarter of a second after receipt: a request that hears
nothing at all for this long reached no agent, although something subscribed to its
subject (``council trace`` does, and hides the server's "no responders")."""
ATTEMPTS = 3

LostHook = Callable[[AgentRequest, str, bool], Awaitable[None]]
"""(request, node that went silent or "", whether the request is asked again)."""


@dataclass(frozen=True)
class _Silent:
    node: str


@dataclass(frozen=True)
class _Unheard:
    """Not a word, not even ``Working``: no agent took the request."""


class BusAgents:
    def __init__(
        self,
        nc: Client,
        *,
        grace_s: float = GRACE_S,
        silence_s: float = SILENCE_S,
        first_word_s: float = FIRST_WORD_S,
        attempts: int = ATTEMPTS,
        on_lost: LostHook | None = None,
        roster: Roster | None = None,
    ) -> None:
        self.nc = nc
        self.grace_s = grace_s
        self.silence_s = silence_s
        self.first_word_s = first_word_s
        self.attempts = attempts
        self.on_lost = on_lost
        self.roster = roster
        self.inbox = ReplyInbox(nc)
        self._sent: dict[str, list[float]] = {}
        """Per agent node, when each request sent to it by name and not answered left."""

    async def start(self) -> None:
        await self.inbox.start()

    async def stop(self) -> None:
        await self.inbox.stop()

    async def opinion(self, request: OpinionRequest) -> Completion | AgentError:
        return await self._request(request, "opinion", Completion)

    async def review(self, request: ReviewRequest) -> ReviewResult | AgentError:
        return await self._request(request, "review", ReviewResult)

    async def synthesize(self, request: SynthesisRequest) -> Completion | AgentError:
        return await self._request(request, "synthesize", Completion)

    async def _request(self, request: AgentRequest, kind: str, expected: type[R]) -> R | AgentError:
        try:
            return await self._ask(request, kind, expected)
        except asyncio.CancelledError:
            # Nobody waits for this call any more (a majority stood, the deadline
            # passed, the session was stopped): the agent frees its slot.
            await self._cancel(request)
            raise

    async def _cancel(self, request: AgentRequest) -> None:
        cancel = CancelCalls(
            session_id=request.session_id,
            members=[request.member],
            reason="the chairman no longer waits for this call",
        )
        try:
            await self.nc.publish(subjects.cancel(request.session_id), encode(cancel))
        except nats.errors.Error as exc:  # disconnected: its deadline ends the call anyway
            log.info("cancel_not_sent", session_id=request.session_id, error=repr(exc))

    async def _ask(self, request: AgentRequest, kind: str, expected: type[R]) -> R | AgentError:
        subject = subjects.agent(request.model, kind)
        deadline = time.monotonic() + request.timeout_s + self.grace_s
        lost: list[str] = []
        for attempt in range(1, self.attempts + 1):
            # a request asked again carries what is left of the deadline, not all of it
            left = max(0.0, deadline - self.grace_s - time.monotonic())
            asked = request if attempt == 1 else msgspec.structs.replace(request, timeout_s=left)
            if attempt == 1:
                outcome = await self._first_attempt(request.model, kind, encode(asked), deadline)
            else:
                outcome = await self._attempt(subject, encode(asked), deadline)
            if isinstance(outcome, _Unheard):
                # once more: an agent may have died on receipt; then no agent serves it
                if attempt == 1 and attempt < self.attempts:
                    log.info("agent_unheard", session_id=request.session_id, subject=subject)
                    continue
                outcome = AgentError(
                    code="no_responders",
                    detail=f"no agent took {subject} within {self.first_word_s:g} s",
                )
            if isinstance(outcome, _Silent):
                lost.append(outcome.node or "an unknown agent")
                again = attempt < self.attempts and time.monotonic() < deadline
                log.warning(
                    "agent_lost",
                    session_id=request.session_id,
                    member=request.member,
                    subject=subject,
                    node=outcome.node,
                    reissued=again,
                )
                if self.on_lost:
                    await self.on_lost(request, outcome.node, again)
                if again:
                    continue
                return AgentError(
                    code="agent_lost", detail=f"{', '.join(lost)} went silent on {subject}"
                )
            if isinstance(outcome, AgentError) and outcome.code == "no_responders" and lost:
                return AgentError(
                    code="agent_lost",
                    detail=f"{', '.join(lost)} went silent and no other agent serves {subject}",
                )
            if isinstance(outcome, AgentError | expected):
                return outcome
            return AgentError(code="invalid_output", detail=f"unexpected {type(outcome).__name__}")
        raise AssertionError("unreachable: the last attempt returns")

    async def _first_attempt(
        self, model: str, kind: str, data: bytes, deadline: float
    ) -> AgentReply | _Silent | _Unheard:
        """To the least busy agent by name when several serve ``model``; to any of them
        at once if that one is gone."""
        anyone = subjects.agent(model, kind)
        node = self.roster.least_busy(model, kind, self._sent) if self.roster else None
        if node is None:
            return await self._attempt(anyone, data, deadline)
        sent = self._sent.setdefault(node, [])
        stamp = time.monotonic()
        sent.append(stamp)
        try:
            outcome = await self._attempt(subjects.agent_on(model, kind, node), data, deadline)
        finally:
            sent.remove(stamp)
        if isinstance(outcome, _Unheard) or (
            isinstance(outcome, AgentError) and outcome.code == "no_responders"
        ):
            log.info("chosen_agent_gone", node=node, subject=anyone)
            return await self._attempt(anyone, data, deadline)
        return outcome

    async def _attempt(
        self, subject: str, data: bytes, deadline: float
    ) -> AgentReply | _Silent | _Unheard:
        """One ask: the reply, an error, _Unheard when no word came within
        ``first_word_s``, or _Silent when an agent that spoke fell silent for
        ``silence_s``."""
        settling = Settling()
        node = ""
        heard = False
        reconnects = self.nc.stats["reconnects"]
        async with self.inbox.open() as (reply_to, replies):
            await self.nc.publish(subject, data, reply=reply_to)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return AgentError(code="timeout", detail=f"no reply on {subject} in time")
                patience = self.silence_s if heard else self.first_word_s
                try:
                    async with asyncio.timeout(min(left, patience)):
                        msg = await replies.get()
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        return AgentError(code="timeout", detail=f"no reply on {subject} in time")
                    # silence across our own reconnect says nothing about the agents
                    cut_off = self.nc.stats["reconnects"] != reconnects or not self.nc.is_connected
                    return _Silent(node) if heard or cut_off else _Unheard()
                heard = True
                if is_no_responders(msg):
                    if await settling.again():
                        await self.nc.publish(subject, data, reply=reply_to)
                        continue
                    return AgentError(code="no_responders", detail=f"no agent serves {subject}")
                try:
                    response = decode_agent_response(msg.data, subject)
                except InvalidMessage as exc:
                    return AgentError(
                        code="invalid_output", detail=f"unreadable agent reply: {exc.detail}"
                    )
                if isinstance(response, Working):
                    node = response.node
                    continue
                return response


class BusTools:
    """The sandbox, reached on ``council.tool.run`` (any tools process of the queue
    group); no tools process answering is a result, ``unavailable``, never an error."""

    def __init__(self, nc: Client, *, timeout_s: float = 30.0) -> None:
        self.nc = nc
        self.timeout_s = timeout_s

    async def run(self, program: RunProgram) -> ProgramResult:
        try:
            msg = await connection.request(
                self.nc, subjects.TOOL_RUN, encode(program), timeout_s=self.timeout_s
            )
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return ProgramResult(
                outcome="unavailable",
                detail=f"no tools process answered on {subjects.TOOL_RUN} "
                "(start one with `council tools`)",
            )
        try:
            return decode_program_result(msg.data, msg.subject)
        except InvalidMessage as exc:
            return ProgramResult(outcome="error", detail=f"the tool's reply: {exc.detail}")
