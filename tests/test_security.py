"""Per-role users of the shipped nats.conf: each role can do its job and nothing else."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from nats.aio.client import Client

from council.agents.runtimes.router import RoutedRuntime
from council.agents.runtimes.scripted import ScriptedRuntime
from council.agents.service import AgentService
from council.bus import subjects
from council.bus.ask import follow, submit
from council.bus.client import Credentials, connect, encode
from council.bus.errors import BusUnavailable
from council.bus.messages import FinalAnswer, Question
from council.bus.server import EmbeddedNats
from council.chairman.admission import Defaults
from council.chairman.conductor import CouncilConfig
from council.chairman.service import ChairmanService

ROLES = ("chairman", "agent", "dashboard", "client")
NATS_CONF = Path(__file__).parent.parent / "nats.conf"


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {role: "p" + secrets.token_hex(12) for role in ROLES}


@pytest.fixture(scope="module")
def secure_server(
    tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]
) -> Iterator[EmbeddedNats]:
    """nats-server with the repo's nats.conf (its store_dir moved to a temp folder)."""
    root = tmp_path_factory.mktemp("secure")
    config = root / "nats.conf"
    text = NATS_CONF.read_text().replace('"./.council-jetstream"', f'"{root / "js"}"')
    config.write_text(text)
    env = {f"COUNCIL_{r.upper()}_PASSWORD": p for r, p in passwords.items()}
    server = EmbeddedNats(root, config=config, log_file=root / "nats.log", env=env).start()
    yield server
    server.stop()


async def as_role(server: EmbeddedNats, passwords: dict[str, str], role: str) -> Client:
    return await connect(server.url, name=role, credentials=Credentials(role, passwords[role]))


@pytest.fixture
async def secure_council(
    secure_server: EmbeddedNats, passwords: dict[str, str]
) -> AsyncIterator[None]:
    """Agents and a chairman, each connected as its own role."""
    runtime = ScriptedRuntime(["m1", "m2"])
    agent_nc = await as_role(secure_server, passwords, "agent")
    agents = AgentService(agent_nc, RoutedRuntime(dict.fromkeys(runtime.models, runtime)), node="a")
    chair_nc = await as_role(secure_server, passwords, "chairman")
    chairman = ChairmanService(
        chair_nc, defaults=Defaults(("m1", "m2"), "m1"), config=CouncilConfig(), node="c"
    )
    await agents.start()
    await chairman.start()
    yield
    await chairman.stop()
    await agents.stop()
    await agent_nc.close()
    await chair_nc.close()


@pytest.mark.parametrize("role", ["dashboard", "client"])
async def test_each_role_with_its_own_user_runs_a_whole_council(
    secure_server: EmbeddedNats, passwords: dict[str, str], secure_council: None, role: str
) -> None:
    """agent, chairman and a reader, each with only its permissions: a session finishes."""
    reader = await as_role(secure_server, passwords, role)
    try:
        accepted = await submit(reader, Question(question="q"))
        events = [e async for e in follow(reader, accepted.session_id, timeout_s=30)]
    finally:
        await reader.close()
    assert isinstance(events[-1], FinalAnswer)


async def refused(
    server: EmbeddedNats, passwords: dict[str, str], role: str, action: str, subject: str
) -> tuple[list[str], int]:
    """Try ``action`` on ``subject`` as ``role``; return the server's errors and what arrived."""
    watcher = await as_role(server, passwords, "chairman" if role != "chairman" else "client")
    arrived: list[bytes] = []
    with structlog.testing.capture_logs() as logs:
        nc = await as_role(server, passwords, role)
        try:
            if action == "publish":
                # a reader is allowed to see session events; it must see none of these
                reader = await as_role(server, passwords, "client")
                sub = await reader.subscribe(subjects.SESSIONS)
                await reader.flush()
                await nc.publish(subject, encode({"type": "final_answer", "answer": "forged"}))
                await nc.flush()
                await asyncio.sleep(0.3)
                try:
                    while True:
                        arrived.append((await sub.next_msg(timeout=0.2)).data)
                except TimeoutError:
                    pass
                await reader.close()
            else:
                sub = await nc.subscribe(subject)
                await nc.flush()
                await asyncio.sleep(0.2)
                await watcher.publish(subject.replace(">", "x"), b"secret")
                await watcher.flush()
                try:
                    while True:
                        arrived.append((await sub.next_msg(timeout=0.3)).data)
                except TimeoutError:
                    pass
        finally:
            await nc.close()
            await watcher.close()
    errors = [str(e.get("error")) for e in logs if e.get("event") == "nats_error"]
    return errors, len(arrived)


@pytest.mark.parametrize(
    ("role", "action", "subject"),
    [
        ("agent", "publish", "council.session.s1.final_answer"),
        ("agent", "subscribe", "council.ask"),
        ("agent", "subscribe", "council.agent.>"),  # outside its queue group
        ("dashboard", "publish", "council.session.s1.opinion"),
        ("dashboard", "subscribe", "council.agent.>"),
        ("client", "publish", "council.session.s1.final_answer"),
        ("client", "publish", "council.agent.m1-x.opinion"),
    ],
)
async def test_forbidden_operations_are_refused_and_change_nothing(
    secure_server: EmbeddedNats, passwords: dict[str, str], role: str, action: str, subject: str
) -> None:
    """The server refuses (a permissions violation reaches error_cb) and nothing is delivered."""
    errors, arrived = await refused(secure_server, passwords, role, action, subject)
    assert any("permissions violation" in e.lower() for e in errors), errors
    assert arrived == 0


async def test_wrong_password_is_a_clear_error(secure_server: EmbeddedNats) -> None:
    """Bad credentials fail at connect, not a hang (with the server's reason when the
    refusal arrives before the server drops the connection)."""
    with pytest.raises(BusUnavailable, match="uthorization|reset by peer"):
        await connect(secure_server.url, name="x", credentials=Credentials("agent", "wrong"))
