"""A chairman's log of its sessions' events in the COUNCIL stream: each stored in its
order, never a later step without an earlier one, and none lost to an outage shorter
than the service's life.

Pipelined (the default), an event is sent without waiting for the stream's ack, so a
stage's events do not each cost a round trip; the acks are awaited before the
session's terminal event, and before any event sent after the connection broke or
the stream refused one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time

import structlog
from nats.aio.client import Client
from nats.js.api import PubAck

from council.bus.events import FinalAnswer, SessionEvent, SessionFailed
from council.bus.transport.stream import publish_event, send_event
from council.bus.transport.tasks import cancel_and_wait

log = structlog.get_logger()


class EventLog:
    def __init__(self, nc: Client, *, patience_s: float = 60.0, pipelined: bool = True) -> None:
        """``patience_s``: how long an event is retried while the stream is unreachable
        (a restarting server, a cluster electing a leader); the session waits meanwhile
        rather than go on with a gap, then goes on while the event is confirmed in the
        background. ``pipelined``: send without waiting for each ack (the benchmarks
        turn it off to measure what it saves)."""
        self.nc = nc
        self.js = nc.jetstream()
        self.patience_s = patience_s
        self.pipelined = pipelined
        self._unacked: dict[str, list[_InFlight]] = {}
        self._confirming: set[asyncio.Task[None]] = set()

    def forget(self, session: str) -> None:
        """A session no longer this chairman's (ended, or taken over): its acks are moot."""
        self._unacked.pop(session, None)

    async def close(self) -> None:
        """Stop confirming: an event still unconfirmed is logged as lost."""
        await cancel_and_wait(list(self._confirming))

    async def store(self, event: SessionEvent) -> None:
        """Store one event of a session in its order."""
        session = event.session_id
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
                await asyncio.wait_for(asyncio.shield(earlier.ack), self.patience_s)
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
        if await self._publish_within(event, self.patience_s):
            return
        log.warning(
            "event_unconfirmed",
            session_id=event.session_id,
            seq=event.seq,
            waited_s=self.patience_s,
            hint="the stream was unreachable; confirming in the background",
        )
        task = asyncio.create_task(self._confirm(event))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm(self, event: SessionEvent) -> None:
        started = time.monotonic()
        try:
            while not await self._publish_within(event, self.patience_s):
                pass
        except asyncio.CancelledError:
            log.error("event_lost", session_id=event.session_id, seq=event.seq)
            raise
        log.info(
            "event_stored_late",
            session_id=event.session_id,
            seq=event.seq,
            after_s=round(time.monotonic() - started + self.patience_s, 1),
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
