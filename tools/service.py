"""Bus glue for the sandbox: ``council.tool.run`` in a queue group, a bounded number
of programs at once, and heartbeats; where programs cannot be sandboxed, every
reply says so (``unavailable``) and the log says why at start."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from council.bus import subjects
from council.bus.codec import decode_program, encode
from council.bus.errors import InvalidMessage
from council.bus.messages import ProgramResult
from council.bus.transport.health import Health, run_heartbeat
from council.bus.transport.inbox import answerable
from council.bus.transport.tasks import cancel_and_wait
from council.bus.tunables import tunable
from council.tools.sandbox import Sandbox

log = structlog.get_logger()


@dataclass(frozen=True)
class ToolsOptions:
    concurrency: int = tunable(
        2,
        "COUNCIL_SANDBOX_CONCURRENCY",
        "programs `council tools` runs at once",
        flag="--sandbox-concurrency",
    )


class ToolService:
    def __init__(
        self,
        nc: Client,
        sandbox: Sandbox,
        *,
        node: str,
        concurrency: int = ToolsOptions.concurrency,
        heartbeat_s: float = Health.heartbeat,
    ) -> None:
        self.nc = nc
        self.sandbox = sandbox
        self.node = node
        self.heartbeat_s = heartbeat_s
        self._bound = asyncio.Semaphore(concurrency)
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.in_flight = 0
        self.served = 0

    async def start(self) -> None:
        self._subs.append(
            await self.nc.subscribe(
                subjects.TOOL_RUN, queue=subjects.TOOLS_QUEUE, cb=self._on_request
            )
        )
        await self.nc.flush()
        heartbeat = run_heartbeat(
            self.nc, node=self.node, role="tools", describe=self.describe,
            interval_s=self.heartbeat_s,
        )  # fmt: skip
        self._tasks.add(asyncio.create_task(heartbeat))
        if self.sandbox.unavailable:
            log.warning("sandbox_unavailable", reason=self.sandbox.unavailable)
        log.info("tools_serving", node=self.node, sandbox=not self.sandbox.unavailable)

    def describe(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight}

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()
        await cancel_and_wait(list(self._tasks))

    async def _on_request(self, msg: Msg) -> None:
        task = asyncio.create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        if not answerable(msg):
            return
        try:
            program = decode_program(msg.data, msg.subject)
        except InvalidMessage as exc:
            log.warning("bad_program_request", error=exc.detail)
            await msg.respond(encode(ProgramResult(outcome="bad_request", detail=exc.detail)))
            return
        async with self._bound:
            self.in_flight += 1
            try:
                result = await self.sandbox.run(program.code)
            except Exception as exc:  # the tool must keep serving whatever a program did
                log.exception("sandbox_failed", session_id=program.session_id)
                result = ProgramResult(outcome="error", detail=f"the sandbox failed: {exc!r}")
            finally:
                self.in_flight -= 1
        self.served += 1
        log.info(
            "program_served",
            session_id=program.session_id,
            outcome=result.outcome,
            wall_ms=result.wall_ms,
        )
        await msg.respond(encode(result))
