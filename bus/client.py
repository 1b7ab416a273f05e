"""Connection glue: connect with reconnect, the COUNCIL stream, encode/decode.

Permission violations and async errors never raise in nats-py, so every
connection logs them through ``error_cb``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import msgspec
import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from council.bus import subjects
from council.bus.errors import BusUnavailable, InvalidMessage
from council.bus.messages import Event, SessionEvent, event_kind

log = structlog.get_logger()

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_event_decoder: msgspec.json.Decoder[SessionEvent] = msgspec.json.Decoder(SessionEvent)

DEFAULT_URL = "nats://127.0.0.1:4222"


def encode(message: Any) -> bytes:
    return _encoder.encode(message)


def decode(kind: Any, data: bytes, subject: str = "?") -> Any:
    """Decode ``data`` as ``kind``; raise InvalidMessage with msgspec's reason."""
    try:
        return msgspec.json.decode(data, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidMessage(subject, str(exc)) from exc


def decode_event(data: bytes, subject: str = "?") -> SessionEvent:
    try:
        return _event_decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidMessage(subject, str(exc)) from exc


@dataclass(frozen=True)
class Credentials:
    """Who a process is on the bus: a user and password, or a NATS .creds file."""

    user: str = ""
    password: str = ""
    creds_file: str = ""

    def options(self) -> dict[str, Any]:
        if self.creds_file:
            return {"user_credentials": self.creds_file}
        if self.user:
            return {"user": self.user, "password": self.password}
        return {}


async def connect(
    url: str = DEFAULT_URL,
    *,
    name: str,
    credentials: Credentials | None = None,
    connect_timeout: float = 2.0,
    initial_wait_s: float = 0.0,
) -> Client:
    """A client that reconnects forever and logs the errors nats-py would swallow.

    ``initial_wait_s`` keeps retrying the first connection that long (a server
    that is still starting); nats-py itself only retries after a first success.
    """
    bound = log.bind(connection=name, url=url)

    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))
        bound.error("nats_error", error=repr(exc))

    client: list[Client] = []

    async def on_disconnected() -> None:
        closing = bool(client) and (client[0].is_closed or client[0].is_draining)
        (bound.debug if closing else bound.warning)("nats_disconnected")

    async def on_reconnected() -> None:
        bound.info("nats_reconnected")

    # With unlimited reconnects nats-py retries a first connection forever: probe first.
    servers = [u.strip() for u in url.split(",") if u.strip()]
    deadline = time.monotonic() + initial_wait_s
    while not await _any_listens(servers, connect_timeout):
        if time.monotonic() >= deadline:
            raise BusUnavailable(url, "nothing listens there")
        await asyncio.sleep(0.25)
    try:
        connected = await nats.connect(
            servers,
            name=name,
            connect_timeout=connect_timeout,
            # one try while connecting (a refused login must not retry forever) …
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            **(credentials or Credentials()).options(),
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        seen = list(dict.fromkeys(errors)) or [str(exc) or type(exc).__name__]
        raise BusUnavailable(url, "; ".join(seen)) from exc
    connected.options["max_reconnect_attempts"] = -1  # … then reconnect forever
    client.append(connected)
    return connected


async def _any_listens(servers: list[str], timeout_s: float) -> bool:
    for server in servers:
        parsed = urlparse(server if "://" in server else f"nats://{server}")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222),
                timeout_s,
            )
        except (OSError, TimeoutError):
            continue
        writer.close()
        return True
    return False


async def ensure_stream(js: JetStreamContext) -> None:
    """Create the COUNCIL stream if missing; it stores session events only."""
    config = StreamConfig(
        name=subjects.STREAM,
        subjects=[subjects.SESSIONS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * 24 * 3600,
        max_bytes=1024**3,
        discard=DiscardPolicy.OLD,
        duplicate_window=120,
        max_consumers=10_000,  # readers' ordered consumers; the server default is lower
    )
    try:
        await js.stream_info(subjects.STREAM)
    except NotFoundError:
        await js.add_stream(config)
        log.info("stream_created", stream=subjects.STREAM)


async def publish_event(js: JetStreamContext, event: Event) -> None:
    """Store one session event; the Nats-Msg-Id makes a resend after a reconnect a no-op."""
    await js.publish(
        subjects.session_event(event.session_id, event_kind(event)),
        encode(event),
        headers={"Nats-Msg-Id": f"{event.session_id}-{event.seq}"},
    )


async def request(
    nc: Client, subject: str, data: bytes, *, timeout_s: float, settle_s: float = 0.3
) -> Msg:
    """Request/reply that re-asks on "no responders" for ``settle_s``.

    nats-server 2.15 can answer "no responders" for a few milliseconds after
    another connection's subscription was flushed (measured here: 1 request in
    12 right after a subscribe; a retry 50 ms later always got through), so a
    responder that has just started is not taken for a missing one.
    """
    deadline = time.monotonic() + settle_s
    while True:
        try:
            return await nc.request(subject, data, timeout=timeout_s)
        except nats.errors.NoRespondersError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.05)
