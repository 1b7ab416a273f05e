"""Connection glue: connect with reconnect, the COUNCIL stream, encode/decode.

Permission violations and async errors never raise in nats-py, so every
connection logs them through ``error_cb``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
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
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamConsumerLimits,
)
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from council.bus import subjects
from council.bus.errors import BusUnavailable, CouncilError, InvalidMessage
from council.bus.messages import Event, SessionEvent, event_kind

log = structlog.get_logger()

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_event_decoder: msgspec.json.Decoder[SessionEvent] = msgspec.json.Decoder(SessionEvent)

DEFAULT_URL = "nats://127.0.0.1:4222"

CONSUMER_IDLE_S = 10.0
"""How long a consumer of the stream outlives its reader: the stream's limit for
every consumer, so none that a reader creates (or forgets) stays."""


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
    """Who a process is on the bus (a user and password, or a NATS .creds file) and
    how it checks the server: ``tls_ca`` is the only CA trusted (else the system's),
    ``tls_cert`` and ``tls_key`` a client certificate for servers that verify clients.
    """

    user: str = ""
    password: str = ""
    creds_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    @property
    def wants_tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert or self.tls_key)

    def options(self) -> dict[str, Any]:
        """nats.connect keyword arguments; ValueError names a TLS file that cannot be used."""
        options: dict[str, Any] = {}
        if self.creds_file:
            options["user_credentials"] = self.creds_file
        elif self.user:
            options.update(user=self.user, password=self.password)
        if self.wants_tls:
            options["tls"] = self._tls_context()
        return options

    def _tls_context(self) -> ssl.SSLContext:
        if self.tls_key and not self.tls_cert:
            raise ValueError("a TLS client key needs its certificate (COUNCIL_NATS_TLS_CERT)")
        try:
            context = ssl.create_default_context(cafile=self.tls_ca or None)
        except OSError as exc:  # a missing file, or an ssl.SSLError: no certificate in it
            raise ValueError(f"cannot use TLS CA file {self.tls_ca!r}: {exc}") from exc
        if self.tls_cert:
            try:
                context.load_cert_chain(self.tls_cert, self.tls_key or None)
            except OSError as exc:
                raise ValueError(
                    f"cannot use TLS client certificate {self.tls_cert!r}: {exc}"
                ) from exc
        return context


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

    errors: list[Exception] = []
    # A failed TLS handshake makes nats-py hang while closing the socket
    # (nats-io/nats.py#718), and a certificate failure would not heal by retrying.
    tls_failed: asyncio.Future[ssl.SSLError] = asyncio.get_running_loop().create_future()

    async def on_error(exc: Exception) -> None:
        errors.append(exc)
        bound.error("nats_error", error=repr(exc))
        if isinstance(exc, ssl.SSLError) and not tls_failed.done():
            tls_failed.set_result(exc)

    client: list[Client] = []

    async def on_disconnected() -> None:
        closing = bool(client) and (client[0].is_closed or client[0].is_draining)
        (bound.debug if closing else bound.warning)("nats_disconnected")

    async def on_reconnected() -> None:
        bound.info("nats_reconnected")

    credentials = credentials or Credentials()
    try:
        options = credentials.options()
    except ValueError as exc:
        raise BusUnavailable(url, str(exc)) from exc

    # With unlimited reconnects nats-py retries a first connection forever: probe first.
    servers = [u.strip() for u in url.split(",") if u.strip()]
    deadline = time.monotonic() + initial_wait_s
    while not await _any_listens(servers, connect_timeout):
        if time.monotonic() >= deadline:
            raise BusUnavailable(url, "nothing listens there")
        await asyncio.sleep(0.25)
    if credentials.wants_tls or any(s.startswith("tls://") for s in servers):
        # nats-py encrypts only when the server's INFO requires TLS (a tls:// URL or a
        # CA does not make it insist), so it would send the login in clear text.
        plain = await _servers_without_tls(servers, connect_timeout)
        if plain:
            raise BusUnavailable(
                url,
                f"TLS is configured but {', '.join(plain)} does not require TLS "
                "(enable tls in its config, or use nats:// and no TLS settings)",
            )

    attempt = asyncio.ensure_future(
        nats.connect(
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
            inbox_prefix=subjects.inbox_prefix(credentials.user),
            **options,
        )
    )
    try:
        either: list[asyncio.Future[Any]] = [attempt, tls_failed]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not attempt.done():
            attempt.cancel()
            await asyncio.wait([attempt])  # unlike ``await attempt``, keeps our own cancel
    if attempt.cancelled():  # only by a TLS failure: a cancelled caller never gets here
        raise BusUnavailable(url, _tls_reason(tls_failed.result()))
    try:
        connected = attempt.result()
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        if tls_failed.done():  # the handshake failed first: name that, not the broken pipe
            raise BusUnavailable(url, _tls_reason(tls_failed.result())) from exc
        if credentials.wants_tls and not credentials.tls_cert and _dropped([exc, *errors]):
            # TLS 1.3: a server that wants a client certificate says so in an alert the
            # client may not read before its first write finds the connection closed
            raise BusUnavailable(
                url,
                "TLS: the server dropped the connection after the handshake: it probably "
                "requires a client certificate (COUNCIL_NATS_TLS_CERT, _KEY)",
            ) from exc
        seen = list(dict.fromkeys(map(str, errors))) or [str(exc) or type(exc).__name__]
        raise BusUnavailable(url, "; ".join(seen)) from exc
    connected.options["max_reconnect_attempts"] = -1  # … then reconnect forever
    client.append(connected)
    return connected


def _dropped(failures: list[BaseException]) -> bool:
    """Whether one of these is a connection the other end closed (or wraps one)."""
    for failure in failures:
        cause: BaseException | None = failure
        while cause is not None:
            if isinstance(cause, BrokenPipeError | ConnectionResetError):
                return True
            cause = cause.__cause__ or cause.__context__
    return False


def _tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS: the server's certificate is not trusted ({exc.verify_message}); trust "
            "the CA that signed it (COUNCIL_NATS_TLS_CA) and use a host name it lists"
        )
    if "CERTIFICATE_REQUIRED" in (exc.reason or ""):
        return "TLS: the server requires a client certificate (COUNCIL_NATS_TLS_CERT, _KEY)"
    return f"TLS: {exc}"  # e.g. the server did not accept the client's certificate


async def _servers_without_tls(servers: list[str], timeout_s: float) -> list[str]:
    """The listening servers whose greeting (the INFO line, sent before TLS) does not
    require TLS; a server that sends none is left to nats-py."""
    plain: list[str] = []
    for server in servers:
        parsed = urlparse(server if "://" in server else f"nats://{server}")
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        except (OSError, TimeoutError):
            continue
        try:
            line = await asyncio.wait_for(reader.readline(), timeout_s)
        except (OSError, TimeoutError):
            line = b""
        finally:
            writer.close()
        if line.startswith(b"INFO "):
            try:
                info = json.loads(line[5:])
            except ValueError:
                continue
            if not info.get("tls_required"):
                plain.append(f"{host}:{port}")
    return plain


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


async def ensure_stream(
    js: JetStreamContext, replicas: int = 1, *, wait_s: float = 15.0, attempt_s: float = 1.0
) -> None:
    """Create the COUNCIL stream if missing; it stores session events only.

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
        subjects=[subjects.SESSIONS],
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
    if limits is None or limits.inactive_threshold != CONSUMER_IDLE_S:  # made by an older council
        await js.update_stream(
            dataclasses.replace(info.config, consumer_limits=config.consumer_limits)
        )
        log.info("stream_consumer_limit_set", stream=subjects.STREAM, idle_s=CONSUMER_IDLE_S)
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
