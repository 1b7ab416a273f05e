"""The COUNCIL stream: its set-up, storing a session event (acked, or sent with its
ack to await later), and reading what it stored (a session's events, conversations'
turns, the sessions still open)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats.errors
import structlog
from nats import nuid
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DiscardPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamConsumerLimits,
)
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from council.bus import subjects
from council.bus.codec import decode_turn, encode, read_event
from council.bus.errors import CouncilError, NotYours
from council.bus.events import TERMINAL_EVENTS, Event, SessionEvent, SessionStarted, event_kind
from council.bus.messages import Turn
from council.bus.transport.connection import whoami

log = structlog.get_logger()

CONSUMER_IDLE_S = 10.0
"""How long a consumer of the stream outlives its reader: the stream's limit for
every consumer, so none that a reader creates (or forgets) stays."""


async def ensure_stream(
    js: JetStreamContext, replicas: int = 1, *, wait_s: float = 15.0, attempt_s: float = 1.0
) -> None:
    """Create the COUNCIL stream if missing; it stores session events and conversations' turns.

    ``replicas`` > 1 needs a cluster: R3 keeps every event on three nodes, so
    the loss of one loses nothing. A cluster that has just started elects its
    JetStream leader first (about a second here) and drops API requests until
    then, so each call waits ``attempt_s`` and is retried for up to ``wait_s``.
    An existing stream keeps its replica count (only logged when it differs):
    scaling a stream is an operator's decision, and chairmen started with
    different settings must not scale it back and forth.
    """
    config = StreamConfig(
        name=subjects.STREAM,
        subjects=[subjects.SESSIONS, subjects.CONVERSATIONS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * 24 * 3600,
        max_bytes=1024**3,
        discard=DiscardPolicy.OLD,
        duplicate_window=120,
        max_consumers=10_000,  # readers' ordered consumers; the server default is lower
        consumer_limits=StreamConsumerLimits(inactive_threshold=CONSUMER_IDLE_S),
        num_replicas=replicas,
    )
    started = time.monotonic()
    failures = 0
    while True:
        try:
            await asyncio.wait_for(_create_or_check(js, config), attempt_s)
        except (TimeoutError, ServiceUnavailableError) as exc:
            waited = time.monotonic() - started
            if waited >= wait_s:
                raise CouncilError(
                    f"JetStream did not create or find the {subjects.STREAM} stream within "
                    f"{wait_s:g} s ({exc!r}); is JetStream on, and are {replicas} nodes up?"
                ) from exc
            if not failures:
                log.warning("jetstream_not_ready", error=repr(exc), retrying_for_s=wait_s)
            failures += 1
            await asyncio.sleep(0.2)
        except APIError as exc:  # e.g. replicas > 1 on a server that is not clustered
            raise CouncilError(
                f"cannot create the {subjects.STREAM} stream with {replicas} replica(s): "
                f"{exc.description or exc!r}"
            ) from exc
        else:
            if failures:
                log.info("jetstream_ready", waited_s=round(time.monotonic() - started, 1))
            return


async def _create_or_check(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        info = await js.stream_info(subjects.STREAM)
    except NotFoundError:
        await js.add_stream(config)
        log.info("stream_created", stream=subjects.STREAM, replicas=config.num_replicas)
        return
    limits = info.config.consumer_limits
    if (
        limits is None
        or limits.inactive_threshold != CONSUMER_IDLE_S
        or set(info.config.subjects or []) != set(config.subjects or [])
    ):  # made by an older council
        await js.update_stream(
            dataclasses.replace(
                info.config, consumer_limits=config.consumer_limits, subjects=config.subjects
            )
        )
        log.info("stream_updated", stream=subjects.STREAM, subjects=config.subjects)
    if info.config.num_replicas != config.num_replicas:
        log.warning(
            "stream_replicas_differ",
            stream=subjects.STREAM,
            replicas=info.config.num_replicas,
            configured=config.num_replicas,
            hint=f"nats stream edit {subjects.STREAM} --replicas {config.num_replicas}",
        )


async def publish_event(js: JetStreamContext, event: Event) -> None:
    """Store one session event; the Nats-Msg-Id makes a resend after a reconnect a no-op."""
    await js.publish(
        subjects.session_event(event.session_id, event_kind(event)),
        encode(event),
        headers={"Nats-Msg-Id": f"{event.session_id}-{event.seq}"},
    )


async def send_event(js: JetStreamContext, event: Event) -> asyncio.Future[PubAck]:
    """Send one session event without waiting for the stream: the future is its ack.
    Events sent on one connection are stored in the order sent."""
    return await js.publish_async(
        subjects.session_event(event.session_id, event_kind(event)),
        encode(event),
        headers={"Nats-Msg-Id": f"{event.session_id}-{event.seq}"},
    )


async def stored_events(nc: Client, session_id: str, *, wait_s: float = 2.0) -> list[SessionEvent]:
    """The events stored for a session so far, in stream order (no waiting for more)."""
    stored = await _stored(nc, subjects.session_events(session_id), wait_s)
    return [e for msg in stored if (e := session_event(msg, session_id)) is not None]


async def conversation(nc: Client, conversation_id: str, *, wait_s: float = 2.0) -> list[Turn]:
    """The finished turns of a conversation so far, oldest first ([] for none)."""
    stored = await _stored(nc, subjects.turns(conversation_id), wait_s)
    return [t for msg in stored if (t := decode_turn.read(msg, "bad_turn")) is not None]


async def sessions_started(nc: Client, person: str, *, wait_s: float = 2.0) -> list[SessionStarted]:
    """How each stored session of ``person`` started (its plan says the conversation it
    is a turn of), oldest first."""
    subject = subjects.session_event(f"{person}.*", event_kind(SessionStarted))
    return [
        e
        for msg in await _stored(nc, subject, wait_s)
        if isinstance(e := read_event(msg), SessionStarted)
    ]


async def conversations(
    nc: Client, person: str = "*", *, wait_s: float = 2.0
) -> dict[str, list[Turn]]:
    """Every stored conversation's turns of ``person`` (``*``: everyone's, which only
    an admin may read where nats.conf has people), by conversation id, the latest
    started last."""
    threads: dict[str, list[Turn]] = {}
    for msg in await _stored(nc, subjects.conversations_of(person), wait_s):
        if turn := decode_turn.read(msg, "bad_turn"):
            threads.setdefault(turn.conversation, []).append(turn)
    return threads


async def _stored(nc: Client, subject: str, wait_s: float) -> list[Msg]:
    """The messages stored on ``subject`` so far, in stream order (no waiting for more)."""
    stored: list[Msg] = []
    async with consumer(nc, subject) as messages:
        while True:
            try:
                msg = await messages.next_msg(timeout=wait_s)
            except (TimeoutError, nats.errors.TimeoutError):
                return stored  # nothing stored at all
            stored.append(msg)
            if msg.metadata.num_pending == 0:
                return stored


async def open_sessions(nc: Client) -> list[str]:
    """Ids of the stored sessions that started and have no terminal event yet."""
    js = nc.jetstream()

    async def ids(kind: str) -> set[str]:
        info = await js.stream_info(
            subjects.STREAM, subjects_filter=subjects.session_event("*.*", kind)
        )
        return {subjects.session_of(subject) for subject in (info.state.subjects or {})}

    started = await ids(event_kind(SessionStarted))
    ended = set().union(*[await ids(event_kind(kind)) for kind in TERMINAL_EVENTS])
    return sorted(started - ended)


@asynccontextmanager
async def consumer(nc: Client, subject: str) -> AsyncIterator[JetStreamContext.PushSubscription]:
    """An ordered consumer over the stream's messages on ``subject`` from the first.
    Readers may not delete consumers: the server removes it once unsubscribed (the
    stream's limit).

    A named consumer is created on ``$JS.API.CONSUMER.CREATE.COUNCIL.<name>.<subject>``:
    the subject it reads is in the API subject, so nats.conf can let a person create
    consumers on their own subjects only."""
    config = ConsumerConfig(name=nuid.NUID().next().decode())
    try:  # naming the stream spares a $JS.API.STREAM.NAMES lookup readers may not make
        messages = await nc.jetstream().subscribe(
            subject, stream=subjects.STREAM, ordered_consumer=True, config=config
        )
    except nats.errors.Error as exc:
        owner = subject.split(".")[2] if subject.count(".") >= 3 else ""
        if owner not in ("", "*", ">", whoami(nc)):  # the server keeps a person to their own
            raise NotYours(f"what is on {subject}", owner) from exc
        raise CouncilError(f"cannot read {subject} from the stream: {exc!r}") from exc
    try:
        yield messages
    finally:
        try:
            await messages.unsubscribe()
        except nats.errors.Error:
            pass


def session_event(msg: Msg, session_id: str) -> SessionEvent | None:
    """The event in ``msg``, or None (logged) for what is not one of this session's."""
    event = read_event(msg)
    return event if event is not None and event.session_id == session_id else None
