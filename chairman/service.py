"""Bus glue for the chairman: answers ``council.ask`` and runs admitted sessions."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from council.bus import subjects
from council.bus.ask import open_sessions, stored_events
from council.bus.client import decode, decode_event, encode, ensure_stream, publish_event
from council.bus.errors import CouncilError, InvalidMessage
from council.bus.health import run_heartbeat
from council.bus.messages import (
    Accepted,
    AgentRequest,
    AskReply,
    Question,
    Rejected,
    SessionEvent,
    SessionFailed,
    SessionStarted,
    event_kind,
)
from council.bus.tasks import cancel_and_wait
from council.chairman.admission import Defaults, admit, needed_models
from council.chairman.conductor import Conductor, CouncilConfig, Plan
from council.chairman.gateway import BusAgents
from council.chairman.roster import Roster
from council.chairman.session import TERMINAL, InvalidTransition, SessionState

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
        stream_replicas: int = 1,
        store_patience_s: float = 60.0,
    ) -> None:
        """``store_patience_s``: how long an event is retried while the stream is
        unreachable (a restarting server, a cluster electing a leader); the session
        waits meanwhile rather than go on with a gap."""
        self.nc = nc
        self.js = nc.jetstream()
        self.defaults = defaults
        self.config = config
        self.node = node
        self.max_sessions = max_sessions
        self.heartbeat_s = heartbeat_s
        self.stream_replicas = stream_replicas
        self.store_patience_s = store_patience_s
        self.roster = Roster(nc)
        self.agents = BusAgents(nc, silence_s=config.agent_silence_s, on_lost=self._agent_lost)
        self.sessions: dict[str, Conductor] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._sub: Subscription | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await ensure_stream(self.js, self.stream_replicas)
        await self.agents.start()
        await self.roster.start()
        await self.resume_sessions()
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

    async def resume_sessions(self) -> list[str]:
        """Finish the sessions this node was running when its process died.

        The COUNCIL stream holds every step; a session that started and has no
        terminal event, owned by this node, is rebuilt and run from where it was.
        """
        owned = await self._owned_open_sessions()
        if owned:
            await self._refuse_a_namesake()
        for state in owned:
            assert state.started is not None
            config = dataclasses.replace(self.config, quorum=state.started.quorum)
            plan = Plan.of(state.started)
            self._launch(
                Conductor(plan, config, self.agents, self._store, owner=self.node, state=state)
            )
            log.info("session_resumed", session_id=state.session_id, stage=state.state.value)
        return [state.session_id for state in owned]

    async def _owned_open_sessions(self) -> list[SessionState]:
        owned = []
        for session_id in await open_sessions(self.nc):
            if not await self._owns(session_id):  # another chairman's: read no further
                continue
            first_of_each_seq: dict[int, SessionEvent] = {}
            for event in await stored_events(self.nc, session_id):
                first_of_each_seq.setdefault(event.seq, event)  # a replay is not a step
            try:
                state = SessionState.rebuild(session_id, list(first_of_each_seq.values()))
            except InvalidTransition as exc:
                log.warning("session_not_resumable", session_id=session_id, error=str(exc))
                continue
            if state.started is not None and state.started.owner == self.node:
                owned.append(state)
        return owned

    async def _owns(self, session_id: str) -> bool:
        subject = subjects.session_event(session_id, event_kind(SessionStarted))
        try:
            raw = await self.js.get_last_msg(subjects.STREAM, subject)
            started = decode_event(raw.data or b"", subject)
        except (nats.errors.Error, InvalidMessage) as exc:
            log.warning("session_not_resumable", session_id=session_id, error=repr(exc))
            return False
        return isinstance(started, SessionStarted) and started.owner == self.node

    async def _refuse_a_namesake(self) -> None:
        """Two live chairmen with one node name would both resume its sessions."""
        sub = await self.nc.subscribe(subjects.health(self.node))
        try:
            await sub.next_msg(timeout=self.heartbeat_s * 1.5)
        except TimeoutError:
            return
        finally:
            await sub.unsubscribe()
        raise CouncilError(
            f"another chairman is running as node {self.node!r}: give each its own COUNCIL_NODE"
        )

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
        await self.agents.stop()

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
        self._launch(Conductor(plan, self.config, self.agents, self._store, owner=self.node))
        log.info("question_accepted", session_id=plan.session_id, members=plan.members)
        return Accepted(
            session_id=plan.session_id, members=plan.members, chairman=plan.chairman, mode=plan.mode
        )

    def _launch(self, conductor: Conductor) -> None:
        session_id = conductor.plan.session_id
        self.sessions[session_id] = conductor
        self._tasks[session_id] = asyncio.create_task(self._run(conductor))

    async def _agent_lost(self, request: AgentRequest, node: str, reissued: bool) -> None:
        conductor = self.sessions.get(request.session_id)
        if conductor is not None:
            await conductor.agent_lost(request.member, node, reissued)

    async def _run(self, conductor: Conductor) -> None:
        session_id = conductor.plan.session_id
        try:
            await conductor.run()
        finally:
            self.sessions.pop(session_id, None)
            self._tasks.pop(session_id, None)

    async def _store(self, event: SessionEvent) -> None:
        """Publish to the stream, retrying through a reconnect (dedup makes it safe)."""
        deadline = time.monotonic() + self.store_patience_s
        for attempt in itertools.count(1):
            try:
                await publish_event(self.js, event)
                return
            except Exception as exc:
                if time.monotonic() >= deadline:
                    log.error(
                        "event_lost", session_id=event.session_id, seq=event.seq, error=repr(exc)
                    )
                    return
                log.warning("event_publish_retry", attempt=attempt, error=repr(exc))
                await asyncio.sleep(min(2.0, 0.25 * attempt))
