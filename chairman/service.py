"""Bus glue for the chairman: answers ``council.ask`` and runs admitted sessions."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from council.bus import subjects
from council.bus.client import decode, encode, ensure_stream, publish_event
from council.bus.errors import InvalidMessage
from council.bus.health import run_heartbeat
from council.bus.messages import (
    Accepted,
    AskReply,
    Question,
    Rejected,
    SessionEvent,
    SessionFailed,
)
from council.bus.tasks import cancel_and_wait
from council.chairman.admission import Defaults, admit, needed_models
from council.chairman.conductor import Conductor, CouncilConfig
from council.chairman.gateway import BusAgents
from council.chairman.roster import Roster
from council.chairman.session import TERMINAL

log = structlog.get_logger()


class ChairmanService:
    def __init__(
        self,
        nc: Client,
        *,
        defaults: Defaults,
        config: CouncilConfig,
        node: str,
        max_sessions: int = 16,
        heartbeat_s: float = 2.0,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.defaults = defaults
        self.config = config
        self.node = node
        self.max_sessions = max_sessions
        self.heartbeat_s = heartbeat_s
        self.roster = Roster(nc)
        self.agents = BusAgents(nc)
        self.sessions: dict[str, Conductor] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._sub: Subscription | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await ensure_stream(self.js)
        await self.roster.start()
        self._sub = await self.nc.subscribe(
            subjects.ASK, queue=subjects.CHAIRMEN_QUEUE, cb=self._on_ask
        )
        await self.nc.flush()
        self._heartbeat = asyncio.create_task(
            run_heartbeat(
                self.nc,
                node=self.node,
                role="chairman",
                describe=lambda: {"in_flight": len(self.sessions)},
                interval_s=self.heartbeat_s,
            )
        )
        log.info("chairman_serving", node=self.node, defaults=self.defaults)

    async def stop(self) -> None:
        """Stop taking questions; end running sessions with a named failure."""
        if self._sub:
            await self._sub.unsubscribe()
        if self._heartbeat:
            self._heartbeat.cancel()
        for session_id, conductor in list(self.sessions.items()):
            task = self._tasks.get(session_id)
            if task:
                await cancel_and_wait([task])
            if conductor.state.state not in TERMINAL:
                await conductor.record(
                    SessionFailed(
                        session_id=session_id,
                        reason="chairman_stopped",
                        detail="the chairman process was stopped during the session",
                        stage=conductor.state.state.value,
                    )
                )

    async def _on_ask(self, msg: Msg) -> None:
        reply = await self.handle_ask(msg.data, msg.subject)
        if msg.reply:
            await msg.respond(encode(reply))

    async def handle_ask(self, data: bytes, subject: str = subjects.ASK) -> AskReply:
        try:
            question = decode(Question, data, subject)
        except InvalidMessage as exc:
            log.warning("bad_question", error=exc.detail)
            return Rejected(reason="bad_request", detail=exc.detail)
        if len(self.sessions) >= self.max_sessions:
            log.info("question_rejected", reason="busy", sessions=len(self.sessions))
            return Rejected(
                reason="busy", detail=f"{len(self.sessions)} sessions running; try again later"
            )
        members, chairman = needed_models(question, self.defaults)
        if not members <= self.roster.models("opinion") or chairman not in self.roster.models(
            "synthesize"
        ):
            await self.roster.refresh()
        plan = admit(
            question,
            self.defaults,
            quorum=self.config.quorum,
            opinion_models=self.roster.models("opinion") & self.roster.models("review"),
            synthesis_models=self.roster.models("synthesize"),
        )
        if isinstance(plan, Rejected):
            log.info("question_rejected", reason=plan.reason, detail=plan.detail)
            return plan
        conductor = Conductor(plan, self.config, self.agents, self._store)
        self.sessions[plan.session_id] = conductor
        task = asyncio.create_task(self._run(conductor))
        self._tasks[plan.session_id] = task
        log.info("question_accepted", session_id=plan.session_id, members=plan.members)
        return Accepted(
            session_id=plan.session_id, members=plan.members, chairman=plan.chairman, mode=plan.mode
        )

    async def _run(self, conductor: Conductor) -> None:
        session_id = conductor.plan.session_id
        try:
            await conductor.run()
        finally:
            self.sessions.pop(session_id, None)
            self._tasks.pop(session_id, None)

    async def _store(self, event: SessionEvent) -> None:
        """Publish to the stream, retrying through a reconnect (dedup makes it safe)."""
        for attempt in range(5):
            try:
                await publish_event(self.js, event)
                return
            except Exception as exc:
                log.warning("event_publish_retry", attempt=attempt, error=repr(exc))
                await asyncio.sleep(0.5 * (attempt + 1))
        log.error("event_lost", session_id=event.session_id, seq=event.seq)
