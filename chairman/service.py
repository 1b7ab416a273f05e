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
from nats.js.api import PubAck

from council.bus import subjects
from council.bus.ask import conversation, open_sessions, stored_events
from council.bus.codec import decode_forget, decode_stop, encode
from council.bus.errors import CouncilError
from council.bus.health import run_heartbeat
from council.bus.inbox import answerable
from council.bus.messages import (
    Accepted,
    AgentRequest,
    AskReply,
    FinalAnswer,
    Forgotten,
    Rejected,
    SessionCancelled,
    SessionEvent,
    SessionFailed,
    Stopped,
    Turn,
)
from council.bus.roster import Roster
from council.bus.session import TERMINAL, InvalidTransition, SessionState
from council.bus.stream import ensure_stream, publish_event, send_event
from council.bus.tasks import cancel_and_wait
from council.chairman.admission import Admission, Defaults
from council.chairman.conductor import Conductor, CouncilConfig, Plan
from council.chairman.gateway import BusAgents, BusTools
from council.chairman.leases import Leases

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
        lease_s: float = 30.0,
        pipelined: bool = True,
    ) -> None:
        """``store_patience_s``: how long an event is retried while the stream is
        unreachable (a restarting server, a cluster electing a leader); the session
        waits meanwhile rather than go on with a gap. ``lease_s``: how long a
        session whose chairman went silent waits before another takes it over.
        ``pipelined``: send a session's events without waiting for each ack (the
        benchmarks turn it off to measure what it saves)."""
        self.nc = nc
        self.js = nc.jetstream()
        self.defaults = defaults
        self.config = config
        self.node = node
        self.max_sessions = max_sessions
        self.heartbeat_s = heartbeat_s
        self.stream_replicas = stream_replicas
        self.store_patience_s = store_patience_s
        self.lease_s = lease_s
        self.leases = Leases(self.js, node, ttl_s=lease_s, replicas=stream_replicas)
        self.roster = Roster(nc)
        self.admission = Admission(nc, defaults, config, self.roster, max_sessions=max_sessions)
        self.agents = BusAgents(
            nc, silence_s=config.agent_silence_s, on_lost=self._agent_lost, roster=self.roster
        )
        self.tools = BusTools(nc)
        self.sessions: dict[str, Conductor] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._sub: Subscription | None = None
        self._stops: Subscription | None = None
        self._forgets: Subscription | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._confirming: set[asyncio.Task[None]] = set()
        self.pipelined = pipelined
        self._unacked: dict[str, list[_InFlight]] = {}

    async def start(self) -> None:
        await ensure_stream(self.js, self.stream_replicas)
        await self.leases.start()
        await self.agents.start()
        await self.roster.start()
        await self.adopt_sessions(starting=True)
        self._sub = await self.nc.subscribe(
            subjects.ASK, queue=subjects.CHAIRMEN_QUEUE, cb=self._on_ask
        )
        self._stops = await self.nc.subscribe(subjects.STOP, cb=self._on_stop)
        self._forgets = await self.nc.subscribe(
            subjects.FORGET, queue=subjects.CHAIRMEN_QUEUE, cb=self._on_forget
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
        self._keeper = asyncio.create_task(self._keep_leases())
        log.info("chairman_serving", node=self.node, defaults=self.defaults)

    async def adopt_sessions(self, *, starting: bool = False) -> list[str]:
        """Run the open sessions that no live chairman runs: this node's own after a
        restart, and any whose chairman has been silent past its lease.

        The COUNCIL stream holds every step, so a session is rebuilt and run from
        where it was; one that cannot be rebuilt is ended with a named failure.
        """
        adopted: list[str] = []
        for session_id in await open_sessions(self.nc):
            if session_id in self.sessions:
                continue
            if starting and await self.leases.holder(session_id) == self.node:
                await self._refuse_a_namesake()
                starting = False  # checked once
            if not await self.leases.claim(session_id):
                continue  # another chairman runs it
            events = await self._stored(session_id)
            try:
                state = SessionState.rebuild(session_id, events)
            except InvalidTransition as exc:
                await self._end_unresumable(session_id, events, str(exc))
                continue
            if state.state in TERMINAL or state.started is None:
                await self.leases.release(session_id)
                continue
            config = dataclasses.replace(self.config, quorum=state.started.quorum)
            conductor = Conductor(
                state.started.plan, config, self.agents, self._store, owner=self.node,
                state=state, tools=self.tools,
            )  # fmt: skip
            self._launch(conductor)
            adopted.append(session_id)
            log.info(
                "session_resumed" if state.started.owner == self.node else "session_taken_over",
                session_id=session_id,
                stage=state.state.value,
                owner=state.started.owner,
            )
        return adopted

    async def _stored(self, session_id: str) -> list[SessionEvent]:
        first_of_each_seq: dict[int, SessionEvent] = {}
        for event in await stored_events(self.nc, session_id):
            first_of_each_seq.setdefault(event.seq, event)  # a replay is not a step
        return list(first_of_each_seq.values())

    async def _end_unresumable(self, session_id: str, events: list[SessionEvent], why: str) -> None:
        log.warning("session_not_resumable", session_id=session_id, error=why)
        await self._store(
            SessionFailed(
                session_id=session_id,
                seq=max((e.seq for e in events), default=0) + 1,
                reason="not_resumable",
                detail=f"its chairman went away and its events cannot be resumed: {why}",
            )
        )
        await self.leases.release(session_id)

    async def _keep_leases(self) -> None:
        """Renew the leases of the sessions run here (stopping any that another chairman
        took over) and adopt the orphans, a few times per lease."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                for session_id in list(self.sessions):
                    if not await self.leases.renew(session_id):
                        log.warning("session_lost_to_another_chairman", session_id=session_id)
                        task = self._tasks.get(session_id)
                        if task:
                            await cancel_and_wait([task])
                await self.adopt_sessions()
            except Exception as exc:  # the bus is away, say: the next round tries again
                log.warning("lease_round_failed", error=repr(exc))

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
        for sub in (self._sub, self._stops, self._forgets):
            if sub:
                await sub.unsubscribe()
        if self._heartbeat:
            self._heartbeat.cancel()
        if self._keeper:
            await cancel_and_wait([self._keeper])
        for session_id, conductor in list(self.sessions.items()):
            await self._end(
                conductor,
                SessionFailed(
                    session_id=session_id,
                    reason="chairman_stopped",
                    detail="the chairman process was stopped during the session",
                    stage=conductor.state.state.value,
                ),
            )
        await cancel_and_wait(list(self._confirming))
        await self.agents.stop()

    async def _end(self, conductor: Conductor, ending: SessionFailed) -> None:
        """End a running session early: its task is cancelled (its calls with it, at
        their agents too), then ``ending`` is recorded unless it had ended already."""
        session_id = conductor.plan.session_id
        task = self._tasks.get(session_id)
        if task:
            await cancel_and_wait([task])
        if conductor.state.state not in TERMINAL:
            ending.stage = conductor.state.state.value
            await conductor.record(ending)
        await self.leases.release(session_id)

    async def _on_forget(self, msg: Msg) -> None:
        """Delete a conversation: every event of its sessions, then its turns. A session
        of it still running is stopped first (its events would outlive the purge)."""
        asked = decode_forget.read(msg, "bad_forget_request")
        if asked is None or not answerable(msg):
            return
        cid = asked.conversation
        sessions = [t.session_id for t in await conversation(self.nc, cid, wait_s=1.0)]
        for conductor in list(self.sessions.values()):
            if conductor.plan.conversation == cid:
                sessions.append(conductor.plan.session_id)
                await self._end(
                    conductor,
                    SessionCancelled(
                        session_id=conductor.plan.session_id,
                        reason="cancelled",
                        detail="its conversation was deleted",
                    ),
                )
        sessions = list(dict.fromkeys(sessions))
        for session_id in sessions:
            await self.js.purge_stream(subjects.STREAM, subject=subjects.session_events(session_id))
        await self.js.purge_stream(subjects.STREAM, subject=subjects.turns(cid))
        log.info("conversation_forgotten", conversation=cid, sessions=len(sessions))
        await msg.respond(encode(Forgotten(conversation=cid, sessions=sessions)))

    async def _on_stop(self, msg: Msg) -> None:
        """A client stops a session: only the chairman running it answers."""
        asked = decode_stop.read(msg, "bad_stop_request")
        conductor = self.sessions.get(asked.session_id) if asked else None
        if asked is None or conductor is None or not answerable(msg):
            return
        stage = conductor.state.state.value
        log.info("session_stopped", session_id=asked.session_id, stage=stage, why=asked.reason)
        detail = "stopped by a client" + (f": {asked.reason}" if asked.reason else "")
        await self._end(
            conductor,
            SessionCancelled(session_id=asked.session_id, reason="cancelled", detail=detail),
        )
        await msg.respond(encode(Stopped(session_id=asked.session_id, stage=stage)))

    async def _on_ask(self, msg: Msg) -> None:
        if answerable(msg):  # else no session: its asker could never be told of it
            await msg.respond(encode(await self.handle_ask(msg.data, msg.subject)))

    async def handle_ask(self, data: bytes, subject: str = subjects.ASK) -> AskReply:
        plan = await self.admission.admit(data, subject, running=len(self.sessions))
        if isinstance(plan, Rejected):
            return plan
        try:
            await self.leases.claim(plan.session_id)  # a new id: nobody else holds it
        except nats.errors.Error as exc:  # the bucket is electing a leader, say
            log.warning("lease_deferred", session_id=plan.session_id, error=repr(exc))
        conductor = Conductor(
            plan, self.config, self.agents, self._store, owner=self.node, tools=self.tools
        )
        self._launch(conductor)
        log.info("question_accepted", session_id=plan.session_id, members=plan.members)
        return Accepted(
            session_id=plan.session_id,
            members=plan.members,
            chairman=plan.chairman,
            mode=plan.mode,
            strategy=conductor.strategy.name,
            conversation=plan.conversation,
        )

    async def _keep_turn(self, plan: Plan, final: FinalAnswer) -> None:
        """A finished session becomes a turn of its conversation, stored before its
        final answer so that whoever reads the answer can follow up at once; the
        Nats-Msg-Id makes storing it twice (a resumed session) a no-op."""
        turn = Turn(
            conversation=plan.conversation or plan.session_id,
            session_id=plan.session_id,
            question=plan.question,
            answer=final.answer,
            conclusion=final.conclusion,
            ts=final.ts,
        )
        try:
            await self.js.publish(
                subjects.turn(turn.conversation, turn.session_id),
                encode(turn),
                headers={"Nats-Msg-Id": f"{plan.session_id}-turn"},
            )
        except nats.errors.Error as exc:
            log.error("turn_not_stored", session_id=plan.session_id, error=repr(exc))

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
            await self.leases.release(session_id)
        finally:
            self.sessions.pop(session_id, None)
            self._tasks.pop(session_id, None)
            self._unacked.pop(session_id, None)  # a session taken over: its acks are moot

    async def _store(self, event: SessionEvent) -> None:
        """Store one event of a session in its order.

        With ``pipelined`` (the default) an event is sent without waiting for the
        stream's ack, so a stage's events do not each cost a round trip; the acks
        are awaited before the session's terminal event, and before any event sent
        after the connection broke or the stream refused one, so the stream never
        holds a later step without an earlier one.
        """
        session = event.session_id
        if isinstance(event, FinalAnswer) and (conductor := self.sessions.get(session)):
            await self._keep_turn(conductor.plan, event)
        if self.pipelined and not isinstance(event, FinalAnswer | SessionFailed):
            if self._interrupted(session):
                await self._settle(session)
            try:
                ack = await send_event(self.js, event)
            except Exception as exc:  # not even sent (e.g. disconnected): the slow way
                log.warning("event_send_failed", session_id=session, error=repr(exc))
                await self._settle(session)
                await self._store_acked(event)
                return
            in_flight = [f for f in self._unacked.get(session, []) if not _acked(f.ack)]
            self._unacked[session] = [*in_flight, _InFlight(event, ack, self._reconnects())]
            return
        await self._settle(session)
        await self._store_acked(event)

    def _reconnects(self) -> int:
        return int(self.nc.stats["reconnects"])

    def _interrupted(self, session: str) -> bool:
        """Whether an earlier event of the session may be lost while a later one is
        stored: the connection broke while it was in flight (what was written to the
        dead socket is gone, what is sent after the reconnect arrives), or the stream
        refused it (a cluster electing a leader accepts the next one)."""
        reconnects = self._reconnects()
        return any(
            not _acked(f.ack)
            and (f.reconnects != reconnects or not self.nc.is_connected or _refused(f.ack))
            for f in self._unacked.get(session, [])
        )

    async def _settle(self, session: str) -> None:
        """Every event of the session sent so far is stored, in order: each ack is
        awaited, and an event not acked in time is published again (dedup makes that
        safe) before the next one is."""
        for earlier in self._unacked.pop(session, []):
            try:
                await asyncio.wait_for(asyncio.shield(earlier.ack), self.store_patience_s)
            except Exception as exc:
                log.warning(
                    "event_unacked", session_id=session, seq=earlier.event.seq, error=repr(exc)
                )
                await self._store_acked(earlier.event)

    async def _store_acked(self, event: SessionEvent) -> None:
        """Publish to the stream, retrying through a reconnect (dedup makes it safe).

        Past ``store_patience_s`` the session goes on, and the event is confirmed in
        the background: a publish that timed out during an outage may still be
        stored when the connection comes back (nats-py sends what it buffered), so
        it is unconfirmed, not lost, until the service stops without a confirmation.
        """
        if await self._publish_within(event, self.store_patience_s):
            return
        log.warning(
            "event_unconfirmed",
            session_id=event.session_id,
            seq=event.seq,
            waited_s=self.store_patience_s,
            hint="the stream was unreachable; confirming in the background",
        )
        task = asyncio.create_task(self._confirm(event))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm(self, event: SessionEvent) -> None:
        started = time.monotonic()
        try:
            while not await self._publish_within(event, self.store_patience_s):
                pass
        except asyncio.CancelledError:
            log.error("event_lost", session_id=event.session_id, seq=event.seq)
            raise
        log.info(
            "event_stored_late",
            session_id=event.session_id,
            seq=event.seq,
            after_s=round(time.monotonic() - started + self.store_patience_s, 1),
        )

    async def _publish_within(self, event: SessionEvent, patience_s: float) -> bool:
        deadline = time.monotonic() + patience_s
        for attempt in itertools.count(1):
            try:
                await publish_event(self.js, event)
                return True
            except Exception as exc:
                if time.monotonic() >= deadline:
                    return False
                log.warning("event_publish_retry", attempt=attempt, error=repr(exc))
                await asyncio.sleep(min(2.0, 0.25 * attempt))
        raise AssertionError("unreachable: the loop returns")


@dataclasses.dataclass(frozen=True)
class _InFlight:
    """A session event sent without waiting: its ack, and the connection it went on."""

    event: SessionEvent
    ack: asyncio.Future[PubAck]
    reconnects: int
    """The connection's reconnect count when it was sent."""


def _acked(ack: asyncio.Future[PubAck]) -> bool:
    return ack.done() and not ack.cancelled() and ack.exception() is None


def _refused(ack: asyncio.Future[PubAck]) -> bool:
    return ack.done() and not ack.cancelled() and ack.exception() is not None
