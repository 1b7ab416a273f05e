"""What any client of the council does: ask, follow a session, list the agents.

Events are read with an ordered JetStream consumer from the session's first
event, so a client that subscribes after ``Accepted`` misses nothing; token
deltas are live only and arrive through ``on_delta``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from council.bus import subjects
from council.bus.client import decode, decode_event, encode, request
from council.bus.errors import (
    CouncilError,
    InvalidMessage,
    NoCouncil,
    QuestionRejected,
    SessionTimeout,
)
from council.bus.messages import (
    TERMINAL_EVENTS,
    Accepted,
    AgentInfo,
    AskReply,
    Question,
    Rejected,
    SessionEvent,
    TokenDelta,
)

log = structlog.get_logger()


async def submit(nc: Client, question: Question, *, timeout_s: float = 10.0) -> Accepted:
    """Ask; raise NoCouncil when nobody answers, QuestionRejected with its reason."""
    where = nc.connected_url
    url = f"nats://{where.hostname}:{where.port}" if where else "?"  # never the password
    payload = encode(question)
    try:
        msg = await request(nc, subjects.ASK, payload, timeout_s=timeout_s)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        raise NoCouncil(url) from None
    except nats.errors.MaxPayloadError:
        raise QuestionRejected(
            "question_too_long", f"{len(payload)} bytes exceed the NATS server's max_payload"
        ) from None
    reply = decode(AskReply, msg.data, subjects.ASK)
    if isinstance(reply, Rejected):
        raise QuestionRejected(reply.reason, reply.detail)
    return reply


async def follow(
    nc: Client,
    session_id: str,
    *,
    timeout_s: float,
    on_delta: Callable[[TokenDelta], None] | None = None,
) -> AsyncIterator[SessionEvent]:
    """Every event of a session from its start, ending with its terminal event."""
    live = None
    if on_delta is not None:
        callback = on_delta

        async def on_live(msg: Msg) -> None:
            try:
                callback(decode(TokenDelta, msg.data, msg.subject))
            except InvalidMessage:
                pass

        live = await nc.subscribe(subjects.live_session(session_id), cb=on_live)
    try:  # naming the stream spares a $JS.API.STREAM.NAMES lookup readers may not make
        events = await nc.jetstream().subscribe(
            subjects.session_events(session_id), stream=subjects.STREAM, ordered_consumer=True
        )
    except nats.errors.Error as exc:
        raise CouncilError(f"cannot read the events of session {session_id}: {exc!r}") from exc
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SessionTimeout(session_id, timeout_s)
            try:
                msg = await events.next_msg(timeout=min(left, 5.0))
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            try:
                event = decode_event(msg.data, msg.subject)
            except InvalidMessage as exc:  # anyone may publish here; skip what is not ours
                log.warning("invalid_session_event", subject=msg.subject, error=exc.detail)
                continue
            if event.session_id != session_id:
                log.warning("foreign_session_event", subject=msg.subject, claims=event.session_id)
                continue
            yield event
            if isinstance(event, TERMINAL_EVENTS):
                return
    finally:
        # an ordered consumer outlives its subscription by seconds: delete it now, or
        # a busy server runs into the stream's consumer limit
        try:
            info = await events.consumer_info()
            await events.unsubscribe()
            await nc.jetstream().delete_consumer(subjects.STREAM, info.name)
        except nats.errors.Error:
            pass
        if live is not None:
            await live.unsubscribe()


async def roster(nc: Client, window_s: float = 0.3) -> list[AgentInfo]:
    """Scatter a roster request; every agent process that answers within ``window_s``."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    infos: list[AgentInfo] = []
    try:
        await nc.publish(subjects.ROSTER, encode({}), reply=inbox)
        deadline = time.monotonic() + window_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:
                break
            try:
                infos.append(decode(AgentInfo, msg.data, msg.subject))
            except InvalidMessage:
                log.warning("bad_roster_reply", subject=msg.subject)
    finally:
        await sub.unsubscribe()
    return infos
