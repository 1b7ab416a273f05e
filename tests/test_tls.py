"""TLS on the bus: a council over TLS and mutual TLS, and clear refusals when trust fails.

Certificates come from trustme: a throwaway CA made per test module.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from council.agents.runtimes.router import RoutedRuntime
from council.agents.runtimes.scripted import ScriptedRuntime
from council.assembly.settings import load
from council.assembly.wiring import local_council
from council.bus.client.ask import follow, submit
from council.bus.errors import BusUnavailable
from council.bus.events import FinalAnswer
from council.bus.messages import Question
from council.bus.transport.connection import Credentials, connect
from council.bus.transport.server import EmbeddedNats, free_port
from council.chairman.admission import Defaults
from council.cli.dashboard import dashboard_env
from council.cli.main import build_parser
from council.dashboard.config import DashboardConfig


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here: trusting only it must fail."""
    stranger: Path
    """A client certificate and its key in one file, signed by yet another CA."""


@dataclass(frozen=True)
class TlsServer:
    nats: EmbeddedNats
    monitor_port: int

    @property
    def url(self) -> str:
        return f"tls://127.0.0.1:{self.nats.port}"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")  # an IP only: "localhost" is a wrong host name
    client = ca.issue_cert("council-client")
    names = ("ca", "s.crt", "s.key", "c.crt", "c.key", "other", "stranger.pem")
    files = Pki(*(root / n for n in names))
    ca.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    server.private_key_pem.write_to_path(str(files.server_key))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    trustme.CA().cert_pem.write_to_path(str(files.other_ca))
    stranger = trustme.CA().issue_cert("stranger").private_key_and_cert_chain_pem
    stranger.write_to_path(str(files.stranger))
    return files


def start_tls_server(root: Path, pki: Pki, *, verify_clients: bool) -> TlsServer:
    """nats-server with a tls block (it then refuses plain connections) and /connz."""
    monitor_port = free_port()
    client_check = f'ca_file: "{pki.ca}"\n    verify: true' if verify_clients else ""
    config = root / "nats.conf"
    config.write_text(
        f"http: 127.0.0.1:{monitor_port}\n"
        f'tls {{\n    cert_file: "{pki.server_cert}"\n    key_file: "{pki.server_key}"\n'
        f"    {client_check}\n}}\n"
        f'jetstream {{ store_dir: "{root / "js"}" }}\n'
    )
    server = EmbeddedNats(root, config=config, log_file=root / "nats.log").start()
    return TlsServer(server, monitor_port)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsServer]:
    server = start_tls_server(tmp_path_factory.mktemp("tls"), pki, verify_clients=False)
    yield server
    server.nats.stop()


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsServer]:
    server = start_tls_server(tmp_path_factory.mktemp("mtls"), pki, verify_clients=True)
    yield server
    server.nats.stop()


def connections(server: TlsServer) -> dict[str, dict]:
    """The server's own view of its client connections, by name."""
    url = f"http://127.0.0.1:{server.monitor_port}/connz"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return {c.get("name", ""): c for c in json.load(reply)["connections"]}


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
async def test_a_whole_council_runs_over_tls(
    request: pytest.FixtureRequest, pki: Pki, mutual: bool
) -> None:
    """Agents, chairman and a client on a TLS-only server: a session finishes, and the
    server reports every one of their connections as TLS."""
    server: TlsServer = request.getfixturevalue("mtls_server" if mutual else "tls_server")
    credentials = Credentials(
        tls_ca=str(pki.ca),
        tls_cert=str(pki.client_cert) if mutual else "",
        tls_key=str(pki.client_key) if mutual else "",
    )
    runtime = ScriptedRuntime(["m1", "m2"])
    agent_nc = await connect(server.url, name="tls-agent", credentials=credentials)
    chair_nc = await connect(server.url, name="tls-chairman", credentials=credentials)
    client = await connect(server.url, name="tls-client", credentials=credentials)
    routed = RoutedRuntime.serving(runtime, runtime.models)
    try:
        async with local_council(agent_nc, chair_nc, routed, Defaults(("m1", "m2"), "m1")):
            accepted = await submit(client, Question(question="q"))
            events = [e async for e in follow(client, accepted.session_id, timeout_s=30)]
            seen = await asyncio.to_thread(connections, server)
    finally:
        for nc in (client, chair_nc, agent_nc):
            await nc.close()
    assert isinstance(events[-1], FinalAnswer)
    for name in ("tls-agent", "tls-chairman", "tls-client"):
        assert seen[name]["tls_version"].startswith("1."), seen[name]


async def test_a_client_that_does_not_trust_the_ca_is_refused_naming_the_certificate(
    tls_server: TlsServer, pki: Pki
) -> None:
    """Trusting another CA fails at once with the reason (nats-py alone would hang:
    nats-io/nats.py#718)."""
    started = time.monotonic()
    with pytest.raises(BusUnavailable, match="certificate is not trusted") as caught:
        await connect(tls_server.url, name="x", credentials=Credentials(tls_ca=str(pki.other_ca)))
    assert "unable to get local issuer certificate" in str(caught.value)
    assert time.monotonic() - started < 2.0


async def test_a_host_name_missing_from_the_certificate_is_refused(
    tls_server: TlsServer, pki: Pki
) -> None:
    """The certificate names 127.0.0.1 only; reaching the same server as localhost fails."""
    url = f"tls://localhost:{tls_server.nats.port}"
    with pytest.raises(BusUnavailable, match="Hostname mismatch.*'localhost'"):
        await connect(url, name="x", credentials=Credentials(tls_ca=str(pki.ca)))


async def test_a_client_without_tls_settings_cannot_use_a_tls_server(
    tls_server: TlsServer,
) -> None:
    """nats-py upgrades to TLS whenever the server requires it, trusting the system's CAs:
    a test CA's certificate is refused, clearly and quickly."""
    with pytest.raises(BusUnavailable, match="certificate is not trusted"):
        await connect(tls_server.nats.url, name="x")  # nats://, no CA


async def test_a_plain_text_client_is_refused_by_the_server(tls_server: TlsServer) -> None:
    """The server announces that TLS is required and never answers plain protocol."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tls_server.nats.port)
    try:
        info = json.loads((await asyncio.wait_for(reader.readline(), 5)).removeprefix(b"INFO "))
        writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 5)  # until the server hangs up
    finally:
        writer.close()
    assert info["tls_required"] is True
    assert b"PONG" not in rest
    assert reader.at_eof()


@pytest.mark.parametrize(
    ("certificate", "reason"),
    [(None, "requires a client certificate"), ("stranger", "ALERT_UNKNOWN_CA")],
    ids=["no certificate", "a certificate from another CA"],
)
async def test_mutual_tls_refuses_a_client_that_cannot_prove_itself(
    mtls_server: TlsServer, pki: Pki, certificate: str | None, reason: str
) -> None:
    """With verify: true, trusting the server is not enough: the server must trust the client."""
    cert = str(pki.stranger) if certificate else ""  # the key is in the same file
    started = time.monotonic()
    with pytest.raises(BusUnavailable, match=reason):
        await connect(
            mtls_server.url, name="x", credentials=Credentials(tls_ca=str(pki.ca), tls_cert=cert)
        )
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "credentials", [{"tls_ca": "ca"}, {}], ids=["a CA is configured", "a tls:// URL"]
)
async def test_tls_against_a_server_without_tls_is_refused_before_logging_in(
    nats_server: EmbeddedNats, pki: Pki, credentials: dict[str, str]
) -> None:
    """nats-py would fall back to plain text silently; connect() refuses instead."""
    url = nats_server.url.replace("nats://", "tls://") if not credentials else nats_server.url
    given = Credentials("user", "secret", **{k: str(pki.ca) for k in credentials})
    with pytest.raises(BusUnavailable, match="does not require TLS"):
        await connect(url, name="x", credentials=given)


async def test_unusable_tls_files_are_clear_errors(tls_server: TlsServer, pki: Pki) -> None:
    """A CA file that is not one, or a key without its certificate, is named in the error."""
    with pytest.raises(BusUnavailable, match="cannot use TLS CA file"):
        await connect(tls_server.url, name="x", credentials=Credentials(tls_ca=str(pki.ca.parent)))
    with pytest.raises(BusUnavailable, match="needs its certificate"):
        await connect(
            tls_server.url, name="x", credentials=Credentials(tls_key=str(pki.client_key))
        )


def test_tls_settings_reach_credentials_and_the_dashboard(pki: Pki) -> None:
    """Flags and COUNCIL_NATS_TLS_* variables become Credentials; `council dashboard`
    hands them to the Streamlit process."""
    args = build_parser().parse_args(["chairman", "--nats-tls-cert", str(pki.client_cert)])
    environ = {"COUNCIL_NATS_TLS_CA": str(pki.ca), "COUNCIL_NATS_TLS_KEY": str(pki.client_key)}
    settings = load(args, environ)
    assert settings.credentials == Credentials(
        tls_ca=str(pki.ca), tls_cert=str(pki.client_cert), tls_key=str(pki.client_key)
    )
    assert settings.credentials.options()["tls"].verify_mode.name == "CERT_REQUIRED"
    given = DashboardConfig.given(dashboard_env(settings))
    assert given.credentials == settings.credentials
