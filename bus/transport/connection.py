"""The connection: who a process is on the bus, and a client that reconnects forever.

Permission violations and async errors never raise in nats-py, so every
connection logs them through ``error_cb``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Any

import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from council.bus import subjects
from council.bus.errors import BusUnavailable
from council.bus.transport import probe
from council.bus.transport.inbox import SETTLE_S, Settling
from council.bus.tunables import tunable

log = structlog.get_logger()

DEFAULT_URL = "nats://127.0.0.1:4222"


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


@dataclass(frozen=True)
class Connection:
    """Where the bus is and who this process is on it: every command's settings."""

    nats_url: str = tunable(DEFAULT_URL, "COUNCIL_NATS_URL", "NATS server URL", flag="--nats")
    nats_user: str = tunable("", "COUNCIL_NATS_USER", "NATS user (nats.conf has one per role)")
    nats_password: str = tunable("", "COUNCIL_NATS_PASSWORD", "NATS password of that user")
    nats_creds: str = tunable("", "COUNCIL_NATS_CREDS", "a NATS .creds file, instead of a user")
    nats_tls_ca: str = tunable(
        "", "COUNCIL_NATS_TLS_CA", "CA file that signed the server's TLS certificate"
    )
    nats_tls_cert: str = tunable(
        "", "COUNCIL_NATS_TLS_CERT", "client TLS certificate, for a server that verifies clients"
    )
    nats_tls_key: str = tunable("", "COUNCIL_NATS_TLS_KEY", "private key of that certificate")

    @property
    def credentials(self) -> Credentials:
        return Credentials(
            self.nats_user,
            self.nats_password,
            self.nats_creds,
            tls_ca=self.nats_tls_ca,
            tls_cert=self.nats_tls_cert,
            tls_key=self.nats_tls_key,
        )


def whoami(nc: Client) -> str:
    """The person this connection asks and reads as: its user's subject token (nats.conf
    lets a person's user touch only subjects under that token)."""
    return subjects.person(nc.options.get("user") or "")


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

    servers = [u.strip() for u in url.split(",") if u.strip()]
    await _reachable(url, servers, credentials, connect_timeout, initial_wait_s)
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
        raise _refusal(url, exc, errors, tls_failed, credentials) from exc
    connected.options["max_reconnect_attempts"] = -1  # … then reconnect forever
    client.append(connected)
    return connected


async def _reachable(
    url: str,
    servers: list[str],
    credentials: Credentials,
    connect_timeout: float,
    initial_wait_s: float,
) -> None:
    """Something listens at ``servers`` (waiting up to ``initial_wait_s``), and it
    insists on TLS where TLS is configured. With unlimited reconnects nats-py would
    retry a first connection forever: this probes first."""
    deadline = time.monotonic() + initial_wait_s
    while not await probe.any_answers(servers, connect_timeout):
        if time.monotonic() >= deadline:
            raise BusUnavailable(url, "nothing listens there")
        await asyncio.sleep(0.25)
    if credentials.wants_tls or any(s.startswith("tls://") for s in servers):
        # nats-py encrypts only when the server's INFO requires TLS (a tls:// URL or a
        # CA does not make it insist), so it would send the login in clear text.
        plain = await probe.without_tls(servers, connect_timeout)
        if plain:
            raise BusUnavailable(
                url,
                f"TLS is configured but {', '.join(plain)} does not require TLS "
                "(enable tls in its config, or use nats:// and no TLS settings)",
            )


def _refusal(
    url: str,
    exc: BaseException,
    errors: list[Exception],
    tls_failed: asyncio.Future[ssl.SSLError],
    credentials: Credentials,
) -> BusUnavailable:
    """Why a first connection failed, in the words a person can act on."""
    if tls_failed.done():  # the handshake failed first: name that, not the broken pipe
        return BusUnavailable(url, _tls_reason(tls_failed.result()))
    if credentials.wants_tls and not credentials.tls_cert and _dropped([exc, *errors]):
        # TLS 1.3: a server that wants a client certificate says so in an alert the
        # client may not read before its first write finds the connection closed
        return BusUnavailable(
            url,
            "TLS: the server dropped the connection after the handshake: it probably "
            "requires a client certificate (COUNCIL_NATS_TLS_CERT, _KEY)",
        )
    seen = list(dict.fromkeys(map(str, errors))) or [str(exc) or type(exc).__name__]
    return BusUnavailable(url, "; ".join(seen))


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


async def request(
    nc: Client, subject: str, data: bytes, *, timeout_s: float, settle_s: float = SETTLE_S
) -> Msg:
    """Request/reply that re-asks on "no responders" while it settles (``inbox.Settling``)."""
    settling = Settling(settle_s)
    while True:
        try:
            return await nc.request(subject, data, timeout=timeout_s)
        except nats.errors.NoRespondersError:
            if not await settling.again():
                raise
