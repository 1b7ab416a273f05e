"""Bus glue for agents: one queue-group subscription per model and request kind.

nats-py runs a subscription's callback for one message at a time, so each
request is handed to its own task, bounded by a per-model semaphore; requests
beyond the bound wait in the subscription's queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from council.agents import handlers
from council.agents.live import DeltaPublisher
from council.agents.runtimes.base import Runtime
from council.bus import subjects
from council.bus.codec import decode_cancel, decode_request, encode
from council.bus.errors import InvalidMessage
from council.bus.messages import (
    WORKING_EVERY_S,
    WORKING_FIRST_S,
    AgentError,
    AgentInfo,
    AgentReply,
    AgentRequest,
    ModelStatus,
    Stage,
    Working,
)
from council.bus.transport.health import Health, run_heartbeat
from council.bus.transport.inbox import answerable
from council.bus.transport.tasks import Ticker, cancel_and_wait
from council.bus.tunables import tunable

log = structlog.get_logger()

Handler = Callable[..., Awaitable[AgentReply]]

_KINDS: dict[str, tuple[Handler, Stage]] = {
    "opinion": (handlers.handle_opinion, "opinions"),
    "review": (handlers.handle_review, "reviews"),
    "synthesize": (handlers.handle_synthesis, "synthesis"),
}


@dataclass(frozen=True)
class AgentOptions:
    """What an agents process serves, and how many requests at once."""

    models: tuple[str, ...] = tunable(
        (), "COUNCIL_AGENT_MODELS", "models `council agents` serves", shown="the members' models"
    )
    concurrency: int = tunable(
        6,
        "COUNCIL_AGENT_CONCURRENCY",
        "requests in flight per model (the embedded runtime decodes up to COUNCIL_BATCH together)",
    )


class AgentService:
    def __init__(
        self,
        nc: Client,
        runtime: Runtime,
        *,
        models: list[str],
        node: str,
        kinds: tuple[str, ...] = subjects.AGENT_KINDS,
        concurrency: int = AgentOptions.concurrency,
        heartbeat_s: float = Health.heartbeat,
    ) -> None:
        self.nc = nc
        self.runtime = runtime
        self.node = node
        self.kinds = kinds
        self.heartbeat_s = heartbeat_s
        self._bounds = {m: asyncio.Semaphore(concurrency) for m in models}
        self._taken = dict.fromkeys(models, 0)
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._calls: dict[tuple[str, str], set[asyncio.Task[Any]]] = {}
        """Per (session, member), the calls being served: what a ``CancelCalls`` stops."""
        self._heartbeat: asyncio.Task[None] | None = None
        self.in_flight = 0

    @property
    def models(self) -> list[str]:
        return list(self._bounds)

    async def start(self, *, preload: bool = True) -> None:
        """Load every model (fail early and loudly), then subscribe."""
        if preload:
            for model in self.models:
                await self.runtime.load(model)
        for model in self.models:
            for kind in self.kinds:
                # any agent of the model, or this one by name (least-busy dispatch)
                for subject in (
                    subjects.agent(model, kind),
                    subjects.agent_on(model, kind, self.node),
                ):
                    sub = await self.nc.subscribe(
                        subject, queue=subjects.AGENTS_QUEUE, cb=self._dispatcher(model, kind)
                    )
                    self._subs.append(sub)
        self._subs.append(await self.nc.subscribe(subjects.ROSTER, cb=self._on_roster))
        self._subs.append(await self.nc.subscribe(subjects.CANCELS, cb=self._on_cancel))
        await self.nc.flush()
        self._heartbeat = asyncio.create_task(
            run_heartbeat(
                self.nc,
                node=self.node,
                role="agents",
                describe=self.describe,
                interval_s=self.heartbeat_s,
            )
        )
        log.info("agents_serving", node=self.node, models=self.models, kinds=self.kinds)

    def describe(self) -> dict[str, Any]:
        capacity = self.runtime.capacity()
        return {
            "models": self.statuses(),
            "in_flight": self.in_flight,
            "generation_slots": capacity.slots,
            "threads_per_generation": capacity.threads,
        }

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()
        if self._heartbeat:
            self._heartbeat.cancel()
        await cancel_and_wait(list(self._tasks))

    def _dispatcher(self, model: str, kind: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_message(msg: Msg) -> None:
            task = asyncio.create_task(self._serve(model, kind, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return on_message

    async def _serve(self, model: str, kind: str, msg: Msg) -> None:
        handler, stage = _KINDS[kind]
        if not answerable(msg):
            return
        try:
            request = decode_request[kind](msg.data, msg.subject)
            if request.model != model:
                raise InvalidMessage(msg.subject, f"model {request.model!r} is not {model!r}")
        except InvalidMessage as exc:
            log.warning("bad_agent_request", subject=msg.subject, error=exc.detail)
            await self._reply(msg, AgentError(code="bad_request", detail=exc.detail))
            return
        bound = log.bind(session_id=request.session_id, member=request.member, kind=kind)
        received = time.monotonic()
        working = self._say_working(msg)
        self._taken[model] += 1
        call = (request.session_id, request.member)
        this = asyncio.current_task()
        assert this is not None
        self._calls.setdefault(call, set()).add(this)
        try:
            async with self._bounds[model]:
                # The deadline counts from receipt: time queued behind other calls is spent.
                request.timeout_s -= time.monotonic() - received
                if request.timeout_s <= 0:
                    reply: AgentReply = AgentError(code="timeout", detail="expired while queued")
                else:
                    reply = await self._generate(handler, request, stage)
        except asyncio.CancelledError:
            if this.cancelling() and self._subs:  # a CancelCalls, not our own stop()
                bound.info("llm_call_cancelled", model=model)
                return
            raise
        finally:
            working.cancel()
            self._taken[model] -= 1
            self._calls[call].discard(this)
            if not self._calls[call]:
                del self._calls[call]
        if isinstance(reply, AgentError):
            bound.warning("llm_call_failed", model=model, code=reply.code, detail=reply.detail)
        else:
            bound.info(
                "llm_call",
                model=model,
                runtime=reply.runtime,
                prompt_tokens=reply.usage.prompt_tokens,
                prompt_reused=reply.usage.prompt_reused,
                completion_tokens=reply.usage.completion_tokens,
                latency_ms=round(reply.latency_ms, 1),
                tokens_per_s=round(
                    reply.usage.completion_tokens / max(reply.latency_ms / 1000, 1e-6), 1
                ),
            )
        await self._reply(msg, reply)

    async def _generate(self, handler: Handler, request: AgentRequest, stage: Stage) -> AgentReply:
        self.in_flight += 1
        live = DeltaPublisher(self.nc, request.session_id, stage, request.member)
        try:
            return await handler(self.runtime, request, live.add)
        finally:
            self.in_flight -= 1
            await live.close()

    def _say_working(self, msg: Msg) -> Ticker:
        """``Working`` soon after receipt, then every second until the reply (cancel the
        ticker), so the requester can tell we are alive; a quick call sends none."""
        note = encode(Working(node=self.node))

        def send() -> None:
            task = asyncio.create_task(self._publish_quietly(msg.reply, note))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return Ticker(WORKING_FIRST_S, WORKING_EVERY_S, send)

    async def _publish_quietly(self, subject: str, data: bytes) -> None:
        try:
            await self.nc.publish(subject, data)
        except nats.errors.Error as exc:  # reconnecting: the next one may get through
            log.debug("working_note_failed", error=repr(exc))

    async def _reply(self, msg: Msg, reply: AgentReply) -> None:
        await msg.respond(encode(reply))

    async def _on_cancel(self, msg: Msg) -> None:
        cancel = decode_cancel.read(msg, "bad_cancel")
        if cancel is None or cancel.session_id != subjects.session_of(msg.subject):
            return
        for (session, member), calls in list(self._calls.items()):
            if session == cancel.session_id and (not cancel.members or member in cancel.members):
                for task in calls:
                    task.cancel(cancel.reason or "cancelled by the chairman")

    async def _on_roster(self, msg: Msg) -> None:
        if answerable(msg):
            await msg.respond(encode(AgentInfo(node=self.node, models=self.statuses())))

    def statuses(self) -> list[ModelStatus]:
        return [
            msgspec.structs.replace(
                status, kinds=list(self.kinds), taken=self._taken.get(status.name, 0)
            )
            for status in self.runtime.statuses()
        ]
