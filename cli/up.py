"""`council up`: the whole council on one machine.

Starts an embedded nats-server when nothing answers at the NATS URL, pulls the
models the defaults need, then runs agents, the tools (the sandbox) and the
chairman as child processes (they meet only on the bus, exactly as on several
hosts). Ctrl-C stops all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import nats.errors
from nats.aio.client import Client
from rich.console import Console

from council.agents.runtimes.router import prepare
from council.assembly.roles import wait_for_signal
from council.assembly.settings import Settings, environment
from council.bus import subjects
from council.bus.client.roster import Roster
from council.bus.codec import encode
from council.bus.errors import CouncilError
from council.bus.messages import Question
from council.bus.transport.connection import connect, request, whoami
from council.bus.transport.probe import answers
from council.bus.transport.server import EmbeddedNats
from council.cli.api import api_url
from council.cli.ask import run_ask
from council.cli.dashboard import dashboard_command, dashboard_env, dashboard_url, unguarded
from council.cli.models import progress_bars
from council.tools.sandbox import missing as sandbox_missing


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    return {**os.environ, **environment(settings), **overrides}


def _nats_config(given: str) -> Path | None:
    """The config named, else ./nats.conf when there is one, else none (flags only)."""
    if given:
        return Path(given)
    return Path("nats.conf") if Path("nats.conf").is_file() else None


class Children:
    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.run(name, [sys.executable, "-m", "council.cli", *args], env)

    def run(self, name: str, command: list[str], env: dict[str, str]) -> None:
        # stdout belongs to the answer (`--json`): children write to stderr only
        self.processes.append((name, subprocess.Popen(command, env=env, stdout=sys.stderr)))

    def dead(self) -> list[str]:
        return [f"{n} (exit {p.returncode})" for n, p in self.processes if p.poll() is not None]

    def stop(self, timeout_s: float = 15.0) -> None:
        for _, p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for _, p in self.processes:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def wait_ready(settings: Settings, children: Children, console: Console) -> None:
    """Until agents serve every member model and the chairman model; fail if a child dies."""
    models = set(settings.agent_models)
    nc = await connect(
        settings.nats_url, name="council-up", credentials=settings.credentials, initial_wait_s=30.0
    )
    roster = Roster(nc)
    await roster.start()
    shown = 0.0
    try:
        while True:
            if dead := children.dead():
                raise CouncilError(f"council process died during start-up: {', '.join(dead)}")
            await roster.refresh(0.3)
            ready = roster.models("opinion") & roster.models("synthesize")
            if models <= ready:
                # the chairman answers council.ask once its subscription is in
                reply_ok = await _chairman_answers(nc)
                if reply_ok:
                    return
            if time.monotonic() - shown > 10:
                shown = time.monotonic()
                waiting = ", ".join(sorted(models - ready)) or "chairman"
                console.print(f"waiting for: {waiting} (loading models)")
            await asyncio.sleep(0.5)
    finally:
        await nc.close()


async def _chairman_answers(nc: Client) -> bool:
    """Probe with an empty question: any reply (a Rejected) means a chairman listens."""
    try:
        await request(nc, subjects.ask(whoami(nc)), encode(Question(question="")), timeout_s=1.0)
        return True
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
        return False


ROLES = ("chairman", "agent", "tools", "dashboard", "client")


async def run_up(
    settings: Settings,
    *,
    ask: str | None,
    as_json: bool,
    nats_config: str,
    dashboard: bool,
    api: bool = False,
) -> int:
    console = Console(stderr=True, soft_wrap=True)
    server = None
    users: dict[str, Settings] = {}
    children = Children()
    try:
        if not answers(settings.nats_url):
            config = _nats_config(nats_config)
            if config and not config.is_file():
                console.print(f"[red]no such NATS config: {config}[/]")
                return 2
            server, users = _start_server(settings, config, console)
        else:
            console.print(f"using the NATS server at {settings.nats_url}")
        prepare_models(settings, settings.agent_models, console)
        child = {
            "COUNCIL_AGENT_MODELS": ",".join(settings.agent_models),
            "COUNCIL_LOG_LEVEL": settings.logging.log_level if ask is None else "warning",
        }
        children.start("agents", ["agents"], settings_env(users.get("agent", settings), **child))
        children.start("tools", ["tools"], settings_env(users.get("tools", settings), **child))
        if reason := sandbox_missing():
            console.print(f"[yellow]no sandbox: {reason}[/]; computing members (MODEL+code) fail")
        children.start(
            "chairman",
            ["chairman", "--no-local-agent"],
            settings_env(users.get("chairman", settings), **child),
        )
        console.print("starting agents and chairman, loading models ...")
        client = users.get("client", settings)
        await wait_ready(client, children, console)
        if dashboard:
            _start_dashboard(children, users.get("dashboard", settings), console)
        if api:
            _start_api(children, settings, client, console)
        login = (
            f"COUNCIL_NATS_USER=client COUNCIL_NATS_PASSWORD={client.connection.nats_password} "
            if "client" in users
            else ""
        )
        console.print(
            f"[bold green]council ready[/]: members {','.join(settings.defaults.members)}, "
            f"chairman {settings.defaults.chairman}, NATS {settings.nats_url}\n"
            f'ask with: {login}council ask "your question"   (Ctrl-C stops the council)'
        )
        if ask is not None:
            return await run_ask(
                client,
                ask,
                members=[],
                chairman="",
                mode=settings.defaults.mode,
                as_json=as_json,
                seed=None,
            )
        return 128 + await wait_for_signal()  # as a shell counts a stop by Ctrl-C
    finally:
        if children.processes or server:
            console.print("stopping the council ...")
        children.stop()
        if server:
            server.stop()


def _start_dashboard(children: Children, viewer: Settings, console: Console) -> None:
    """The dashboard, as its NATS user; exposed without a login, with one made for it."""
    if unguarded(viewer):
        login_made = dataclasses.replace(viewer.dashboard, login=secrets.token_urlsafe(12))
        viewer = dataclasses.replace(viewer, dashboard=login_made)
        console.print(f"dashboard login password: [bold]{viewer.dashboard.login}[/]")
    children.run("dashboard", dashboard_command(viewer), dashboard_env(viewer))
    console.print(f"dashboard: [bold]{dashboard_url(viewer)}[/]")


def _start_api(children: Children, settings: Settings, client: Settings, console: Console) -> None:
    """The API: a client like any other, guarded by a key made for this run."""
    key = settings.api.key or secrets.token_urlsafe(16)
    keyed = dataclasses.replace(client, api=dataclasses.replace(client.api, key=key))
    children.start("api", ["api"], settings_env(keyed))
    console.print(
        f"OpenAI-compatible API: [bold]{api_url(settings)}[/] (model council), key [bold]{key}[/]"
    )


def _start_server(
    settings: Settings, config: Path | None, console: Console
) -> tuple[EmbeddedNats, dict[str, Settings]]:
    """An embedded nats-server at the settings' URL; with a config (``nats.conf`` has a
    user per role), fresh passwords for every run and each role's settings as its user."""
    server_env = dict(os.environ)
    users: dict[str, Settings] = {}
    if config:
        passwords = {role: "p" + secrets.token_hex(16) for role in ROLES}
        server_env.update({f"COUNCIL_{r.upper()}_PASSWORD": p for r, p in passwords.items()})
        users = {r: _as_user(settings, r, p) for r, p in passwords.items()}
    parsed = urlparse(settings.nats_url)
    server = EmbeddedNats(
        settings.data_path / "jetstream",
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 4222,
        config=config,
        log_file=settings.data_path / "nats-server.log",
        env=server_env,
        own_session=True,  # Ctrl-C stops the roles first; the server goes last
    ).start()
    where = f"config {config}, a user per role" if config else f"JetStream in {server.store_dir}"
    console.print(f"started nats-server at {server.url} ({where})")
    return server, users


def prepare_models(settings: Settings, models: list[str], console: Console) -> None:
    """What the runtimes must fetch before serving these models (a first run's
    download), with a progress bar per step."""
    try:
        with progress_bars(console) as progress:
            prepare(models, settings.runtime.runtime, settings.runtime, progress)
    except ValueError as exc:
        raise SystemExit(f"error: $COUNCIL_RUNTIME: {exc}") from None


def with_agent_models(settings: Settings) -> Settings:
    """The agents of `council up` serve the members and the chairman's model."""
    models = tuple(dict.fromkeys([*settings.agent_models, settings.defaults.chairman]))
    return dataclasses.replace(settings, agents=dataclasses.replace(settings.agents, models=models))


def _as_user(settings: Settings, user: str, password: str) -> Settings:
    """These settings as a NATS user of ``nats.conf``'s (a role's own login)."""
    connection = dataclasses.replace(
        settings.connection, nats_user=user, nats_password=password, nats_creds=""
    )
    return dataclasses.replace(settings, connection=connection)
