"""What any client of the council does: ask, follow a session, stop one, forget a
conversation, list the agents (the stream's stored events and turns are read with
``transport.stream``'s readers).

Events are read with an ordered JetStream consumer from the session's first
event, so a client that subscribes after ``Accepted`` misses nothing; token
deltas are live only and arrive through ``on_delta``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from council.bus import subjects
from council.bus.codec import (
    decode_agent_info,
    decode_ask_reply,
    decode_delta,
    decode_document_reply,
    decode_forgotten,
    decode_presets,
    decode_stopped,
    encode,
)
from council.bus.errors import (
    CouncilError,
    NoCouncil,
    NotYours,
    QuestionRejected,
    SessionNotRunning,
    SessionTimeout,
)
from council.bus.events import TERMINAL_EVENTS, SessionEvent
from council.bus.messages import (
    PART_CHARS,
    Accepted,
    AgentInfo,
    Document,
    DocumentPart,
    ForgetConversation,
    Forgotten,
    PresetInfo,
    Question,
    Rejected,
    Stopped,
    StopSession,
    TokenDelta,
)
from council.bus.transport.connection import request, whoami
from council.bus.transport.inbox import is_no_responders
from council.bus.transport.stream import consumer, session_event
from council.bus.tunables import tunable

log = structlog.get_logger()


@dataclass(frozen=True)
class Asking:
    """How long a client waits for its answer."""

    ask_timeout: float = tunable(
        900.0,
        "COUNCIL_ASK_TIMEOUT",
        "how long `council ask` (and `council eval`, per question) waits for the answer, s",
    )


INLINE_CHARS = 20_000
"""A file of more text goes ahead of its question through the object store."""


async def submit(nc: Client, question: Question, *, timeout_s: float = 10.0) -> Accepted:
    """Ask (its large files sent ahead); raise NoCouncil when nobody answers,
    QuestionRejected with its reason."""
    if any(len(d.text) > INLINE_CHARS for d in question.documents):
        sent = [
            await store_document(nc, d) if len(d.text) > INLINE_CHARS else d
            for d in question.documents
        ]
        question = msgspec.structs.replace(question, documents=sent)
    payload = encode(question)
    asks = subjects.ask(whoami(nc))
    try:
        msg = await request(nc, asks, payload, timeout_s=timeout_s)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        raise _no_council(nc) from None
    except nats.errors.MaxPayloadError:
        raise QuestionRejected(
            "question_too_long", f"{len(payload)} bytes exceed the NATS server's max_payload"
        ) from None
    reply = decode_ask_reply(msg.data, asks)
    if isinstance(reply, Rejected):
        raise QuestionRejected(reply.reason, reply.detail, reply.retry_after_s)
    return reply


async def store_document(nc: Client, document: Document, *, timeout_s: float = 30.0) -> Document:
    """A file's text sent a part at a time to be kept in the documents' object store;
    the document that names it (its text left out)."""
    asks = subjects.document(whoami(nc))
    upload = uuid.uuid4().hex
    key = ""
    for n, start in enumerate(range(0, len(document.text), PART_CHARS)):
        part = DocumentPart(upload=upload, part=n, text=document.text[start : start + PART_CHARS])
        try:
            msg = await request(nc, asks, encode(part), timeout_s=timeout_s)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            raise _no_council(nc) from None
        reply = decode_document_reply(msg.data, asks)
        if isinstance(reply, Rejected):
            raise QuestionRejected(reply.reason, reply.detail)
        key = reply.key
    return msgspec.structs.replace(document, text="", stored=key, chars=len(document.text))


def _no_council(nc: Client) -> NoCouncil:
    where = nc.connected_url
    return NoCouncil(f"nats://{where.hostname}:{where.port}" if where else "?")  # no password


async def presets(nc: Client, *, timeout_s: float = 3.0) -> list[PresetInfo]:
    """The named councils a chairman runs, its defaults (``default``) first; NoCouncil
    when no chairman answers."""
    try:
        msg = await request(nc, subjects.PRESETS, b"", timeout_s=timeout_s)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        raise _no_council(nc) from None
    return decode_presets(msg.data, subjects.PRESETS).presets


async def stop(nc: Client, session_id: str, *, reason: str = "", timeout_s: float = 3.0) -> Stopped:
    """Stop a running session; SessionNotRunning when no chairman runs it, NotYours when
    it is another person's (an admin may stop anyone's)."""
    owner = subjects.owner_of(session_id) or whoami(nc)
    stops = subjects.stop(owner)
    payload = encode(StopSession(session_id=session_id, reason=reason))
    try:
        msg = await request(nc, stops, payload, timeout_s=timeout_s)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        if owner != whoami(nc):  # the server refuses a person another's subject
            raise NotYours(f"session {session_id}", owner) from None
        raise SessionNotRunning(session_id) from None
    reply = decode_stopped(msg.data, stops)
    if isinstance(reply, Rejected):
        raise NotYours(f"session {session_id}", owner)
    return reply


async def stop_quietly(nc: Client, session_id: str, reason: str) -> None:
    """Stop a session a client no longer waits for (its connection went, its call was
    cancelled); one already over or not stoppable is only logged."""
    try:
        await stop(nc, session_id, reason=reason)
    except CouncilError as exc:
        log.info("session_not_stopped", session_id=session_id, reason=reason, error=str(exc))


async def forget(nc: Client, conversation_id: str, *, timeout_s: float = 30.0) -> Forgotten:
    """Delete a conversation from the stream: its turns and its sessions' events
    (NotYours for another person's, unless this is an admin)."""
    owner = subjects.owner_of(conversation_id) or whoami(nc)
    forgets = subjects.forget(owner)
    payload = encode(ForgetConversation(conversation=conversation_id))
    try:
        msg = await request(nc, forgets, payload, timeout_s=timeout_s)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        if owner != whoami(nc):
            raise NotYours(f"conversation {conversation_id}", owner) from None
        raise _no_council(nc) from None
    reply = decode_forgotten(msg.data, forgets)
    if isinstance(reply, Rejected):
        raise NotYours(f"conversation {conversation_id}", owner)
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
            if delta := decode_delta.read(msg):
                callback(delta)

        live = await nc.subscribe(subjects.live_session(session_id), cb=on_live)
    deadline = time.monotonic() + timeout_s
    last_seq = 0
    try:
        async with consumer(nc, subjects.session_events(session_id)) as events:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SessionTimeout(session_id, timeout_s)
                try:
                    msg = await events.next_msg(timeout=min(left, 5.0))
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                event = session_event(msg, session_id)
                if event is None:
                    continue
                if event.seq <= last_seq:  # stored twice: seq is gap-free and rising
                    log.warning("replayed_session_event", session_id=session_id, seq=event.seq)
                    continue
                last_seq = event.seq
                yield event
                if isinstance(event, TERMINAL_EVENTS):
                    return
    finally:
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
            if is_no_responders(msg):  # nobody serves yet: not a bad reply
                break
            if info := decode_agent_info.read(msg, "bad_roster_reply"):
                infos.append(info)
    finally:
        await sub.unsubscribe()
    return infos
