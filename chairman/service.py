"""Bus glue for the chairman: answers ``council.ask`` and runs admitted sessions."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from council.bus import subjects
from council.bus.client.roster import Roster
from council.bus.codec import decode_document_part, decode_forget, decode_stop, encode
from council.bus.errors import CouncilError
from council.bus.events import FinalAnswer, SessionCancelled, SessionEvent, SessionFailed
from council.bus.messages import (
    OLD_CONTRACT,
    Accepted,
    AgentRequest,
    AskReply,
    DocumentKept,
    Forgotten,
    Rejected,
    Stopped,
    Turn,
)
from council.bus.session import TERMINAL, InvalidTransition, SessionState
from council.bus.transport.eventlog import EventLog
from council.bus.transport.health import Health, run_heartbeat
from council.bus.transport.inbox import answerable
from council.bus.transport.stream import (
    conversation,
    ensure_stream,
    open_sessions,
    sessions_started,
    stored_events,
)
from council.bus.transport.tasks import cancel_and_wait
from council.bus.tunables import tunable
from council.chairman.admission import Admission, Defaults
from council.chairman.conductor import Conductor
from council.chairman.config import CouncilConfig
from council.chairman.core import Plan
from council.chairman.documents import DocumentStore
from council.chairman.fairshare import FairShare, Ticket
from council.chairman.gateway import BusAgents, BusTools
from council.chairman.leases import Leases

log = structlog.get_logger()


def not_theirs(subject: str, owned_id: str) -> Rejected | None:
    """The refusal of a stop or forget, on a person's subject, of a session or
    conversation that is not that person's. nats.conf lets a person publish on their
    own subject only and an admin on anyone's, so the subject says who may act."""
    person, owner = subjects.person_of(subject), subjects.owner_of(owned_id)
    if person == owner:
        return None
    log.warning("not_yours", subject=subject, id=owned_id)
    return Rejected(reason="not_yours", detail=f"{owned_id} is not {person}'s")


@dataclass(frozen=True)
class ChairmanOptions:
    """How a chairman process serves: the keywords of ``ChairmanService`` a person sets."""

    max_sessions: int = tunable(16, "COUNCIL_MAX_SESSIONS", "sessions one chairman runs at once")
    person_sessions: int = tunable(
        8,
        "COUNCIL_PERSON_SESSIONS",
        "sessions of one person a chairman runs at once (their others wait their turn)",
    )
    queue: int = tunable(
        32,
        "COUNCIL_QUEUE",
        "questions of one person that may wait for a chairman's slot (more are refused: busy)",
    )
    stream_replicas: int = tunable(
        1, "COUNCIL_STREAM_REPLICAS", "session events' copies in a NATS cluster (3: lose 1 node)"
    )
    lease_s: float = tunable(
        30.0,
        "COUNCIL_SESSION_LEASE",
        "seconds a session whose chairman went silent waits before another chairman takes it over",
        flag="--session-lease",
    )


class ChairmanService:
    def __init__(
        self,
        nc: Client,
        *,
        defaults: Defaults,
        config: CouncilConfig,
        node: str,
        max_sessions: int = ChairmanOptions.max_sessions,
        person_sessions: int = ChairmanOptions.person_sessions,
        queue: int = ChairmanOptions.queue,
        heartbeat_s: float = Health.heartbeat,
        stream_replicas: int = ChairmanOptions.stream_replicas,
        store_patience_s: float = 60.0,
        lease_s: float = ChairmanOptions.lease_s,
        pipelined: bool = True,
    ) -> None:
        """``store_patience_s`` and ``pipelined``: how its ``EventLog`` stores events.
        ``lease_s``: how long a session whose chairman went silent waits before
        another takes it over."""
        self.nc = nc
        self.js = nc.jetstream()
        self.defaults = defaults
        self.config = config
        self.node = node
        self.max_sessions = max_sessions
        self.heartbeat_s = heartbeat_s
        self.stream_replicas = stream_replicas
        self.lease_s = lease_s
        self.leases = Leases(self.js, node, ttl_s=lease_s, replicas=stream_replicas)
        self.roster = Roster(nc)
        self.share = FairShare(max_sessions, min(person_sessions, max_sessions), queue)
        self.documents = DocumentStore(self.js, replicas=stream_replicas)
        self.admission = Admission(nc, defaults, config, self.roster, self.documents)
        self.agents = BusAgents(
            nc, silence_s=config.agent_silence_s, on_lost=self._agent_lost, roster=self.roster
        )
        self.tools = BusTools(nc)
        self.sessions: dict[str, Conductor] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._sub: Subscription | None = None
        self._old_asks: Subscription | None = None
        self._stops: Subscription | None = None
        self._forgets: Subscription | None = None
        self._presets: Subscription | None = None
        self._document_parts: Subscription | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self.events = EventLog(nc, patience_s=store_patience_s, pipelined=pipelined)

    async def start(self) -> None:
        await ensure_stream(self.js, self.stream_replicas)
        await self.leases.start()
        await self.documents.start()
        await self.agents.start()
        await self.roster.start()
        await self.adopt_sessions(starting=True)
        self._sub = await self.nc.subscribe(
            subjects.ASKS, queue=subjects.CHAIRMEN_QUEUE, cb=self._on_ask
        )
        self._old_asks = await self.nc.subscribe(
            subjects.ASK, queue=subjects.CHAIRMEN_QUEUE, cb=self._on_old_ask
        )
        self._stops = await self.nc.subscribe(subjects.STOPS, cb=self._on_stop)
        self._forgets = await self.nc.subscribe(
            subjects.FORGETS, queue=subjects.CHAIRMEN_QUEUE, cb=self._on_forget
        )
        self._presets = await self.nc.subscribe(
            subjects.PRESETS, queue=subjects.CHAIRMEN_QUEUE, cb=self._on_presets
        )
        self._document_parts = await self.nc.subscribe(
            subjects.DOCUMENT_PARTS, queue=subjects.CHAIRMEN_QUEUE, cb=self._on_document_part
        )
        await self.nc.flush()
        self._heartbeat = asyncio.create_task(
            run_heartbeat(
                self.nc,
                node=self.node,
                role="chairman",
                describe=lambda: {
                    "in_flight": sum(self.share.running.values()),
                    "waiting": self.share.waiting(),
                },
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
        for sub in (
            self._sub, self._old_asks, self._stops, self._forgets, self._presets,
            self._document_parts,
        ):  # fmt: skip
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
        await self.events.close()
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
        if (refused := not_theirs(msg.subject, cid)) is not None:
            await msg.respond(encode(refused))
            return
        turns = await conversation(self.nc, cid, wait_s=1.0)
        sessions = [t.session_id for t in turns]
        for started in await sessions_started(self.nc, subjects.owner_of(cid), wait_s=1.0):
            if cid in (started.session_id, started.plan.conversation):
                sessions.append(started.session_id)  # a failed question is a session, no turn
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
        await self.documents.forget([d for t in turns for d in t.documents])
        log.info("conversation_forgotten", conversation=cid, sessions=len(sessions))
        await msg.respond(encode(Forgotten(conversation=cid, sessions=sessions)))

    async def _on_stop(self, msg: Msg) -> None:
        """A client stops a session: only the chairman running it answers."""
        asked = decode_stop.read(msg, "bad_stop_request")
        conductor = self.sessions.get(asked.session_id) if asked else None
        if asked is None or conductor is None or not answerable(msg):
            return
        if (refused := not_theirs(msg.subject, asked.session_id)) is not None:
            await msg.respond(encode(refused))
            return
        stage = conductor.state.state.value
        log.info("session_stopped", session_id=asked.session_id, stage=stage, why=asked.reason)
        detail = "stopped by a client" + (f": {asked.reason}" if asked.reason else "")
        await self._end(
            conductor,
            SessionCancelled(session_id=asked.session_id, reason="cancelled", detail=detail),
        )
        await msg.respond(encode(Stopped(session_id=asked.session_id, stage=stage)))

    async def _on_document_part(self, msg: Msg) -> None:
        """Keep a part of a large file's text, as its sender's (their subject says who)."""
        part = decode_document_part.read(msg, "bad_document_part")
        if not answerable(msg):
            return
        if part is None:
            await msg.respond(encode(Rejected(reason="bad_request", detail="not a DocumentPart")))
            return
        person = subjects.person_of(msg.subject) or subjects.ANYONE
        try:
            kept: DocumentKept | Rejected = await self.documents.keep(person, part)
        except nats.errors.Error as exc:
            log.warning("document_part_not_kept", upload=part.upload, error=repr(exc))
            kept = Rejected(reason="bad_request", detail=f"the file could not be stored: {exc!r}")
        await msg.respond(encode(kept))

    async def _on_presets(self, msg: Msg) -> None:
        if answerable(msg):
            await msg.respond(encode(await self.admission.listed()))

    async def _on_old_ask(self, msg: Msg) -> None:
        if answerable(msg):
            await msg.respond(encode(OLD_CONTRACT))

    async def _on_ask(self, msg: Msg) -> None:
        if answerable(msg):  # else no session: its asker could never be told of it
            await msg.respond(encode(await self.handle_ask(msg.data, msg.subject)))

    async def handle_ask(
        self, data: bytes, subject: str = subjects.ask(subjects.ANYONE)
    ) -> AskReply:
        """Questions are taken one at a time (a subscription's callbacks run in turn), so
        what ``share.refuses`` counts is exact until the session takes its place."""
        person = subjects.person_of(subject) or subjects.ANYONE
        if self.share.refuses(person):
            return self._busy(person)
        plan = await self.admission.admit(data, subject)
        if isinstance(plan, Rejected):
            return plan
        try:
            await self.leases.claim(plan.session_id)  # a new id: nobody else holds it
        except nats.errors.Error as exc:  # the bucket is electing a leader, say
            log.warning("lease_deferred", session_id=plan.session_id, error=repr(exc))
        conductor = Conductor(
            plan, self.config, self.agents, self._store, owner=self.node, tools=self.tools
        )
        self._launch(conductor, self.share.enter(person))
        log.info("question_accepted", session_id=plan.session_id, members=plan.members)
        return Accepted(
            session_id=plan.session_id,
            members=plan.members,
            chairman=plan.chairman,
            mode=plan.mode,
            strategy=conductor.strategy.name,
            conversation=plan.conversation,
            preset=plan.preset,
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
            preset=plan.preset,
            documents=plan.documents,
        )
        try:
            await self.js.publish(
                subjects.turn(turn.conversation, turn.session_id),
                encode(turn),
                headers={"Nats-Msg-Id": f"{plan.session_id}-turn"},
            )
        except nats.errors.Error as exc:
            log.error("turn_not_stored", session_id=plan.session_id, error=repr(exc))

    def _busy(self, person: str) -> Rejected:
        waiting, retry = self.share.waiting(person), self.share.retry_after_s(person)
        log.info("question_rejected", reason="busy", person=person, waiting=waiting)
        return Rejected(
            reason="busy",
            detail=f"{waiting} of your questions wait already; try again in about {retry:g} s",
            retry_after_s=retry,
        )

    def _launch(self, conductor: Conductor, ticket: Ticket | None = None) -> None:
        """Run a session (``ticket``: its place in the fair share; a resumed one gets
        in line now)."""
        session_id = conductor.plan.session_id
        self.sessions[session_id] = conductor
        ticket = ticket or self.share.enter(subjects.owner_of(session_id))
        self._tasks[session_id] = asyncio.create_task(self._run(conductor, ticket))

    async def _agent_lost(self, request: AgentRequest, node: str, reissued: bool) -> None:
        conductor = self.sessions.get(request.session_id)
        if conductor is not None:
            await conductor.agent_lost(request.member, node, reissued)

    async def _run(self, conductor: Conductor, ticket: Ticket) -> None:
        """Run a session in its person's fair share of the slots: recorded at once, it
        may wait (``session_queued``) before its first stage."""
        session_id = conductor.plan.session_id
        try:
            await conductor.begin()
            async with self.share.turn(ticket, conductor.queued):
                await conductor.run()
            await self.leases.release(session_id)
        finally:
            self.share.leave(ticket)
            self.sessions.pop(session_id, None)
            self._tasks.pop(session_id, None)
            self.events.forget(session_id)

    async def _store(self, event: SessionEvent) -> None:
        """Store one event of a session in its order (``EventLog``); a final answer's
        turn is kept in its conversation first (unless the question asked not to be
        remembered), so whoever reads the answer can follow it up at once."""
        session = event.session_id
        conductor = self.sessions.get(session)
        if isinstance(event, FinalAnswer) and conductor and conductor.plan.remember:
            await self._keep_turn(conductor.plan, event)
        await self.events.store(event)
