"""The `council` command: settings precedence, clear errors, `council trace`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import serving, settled_agents
from nats.aio.client import Client
from rich.console import Console
from test_bus import council as council_on_bus

from council.agents.runtimes.scripted import HANG
from council.assembly.settings import SETTINGS, explicit, load
from council.bus.client.ask import follow, submit
from council.bus.events import FinalAnswer, RankEntry, SessionCancelled
from council.bus.messages import Question
from council.bus.transport.connection import connect
from council.bus.transport.probe import answers
from council.bus.transport.server import EmbeddedNats, free_port
from council.bus.transport.stream import stored_events
from council.cli.ask import render
from council.cli.dashboard import unguarded
from council.cli.main import build_parser


def council(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "council.cli", *args],
        env={**os.environ, "COUNCIL_LOG_FORMAT": "json", **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_settings_come_from_flags_then_environment_then_defaults() -> None:
    """A flag beats its environment variable, which beats the default."""
    args = build_parser().parse_args(["chairman", "--quorum", "3"])
    environ = {"COUNCIL_QUORUM": "5", "COUNCIL_MODE": "rank"}
    settings = load(args, environ)
    assert settings.council.quorum == 3
    assert settings.defaults.mode == "rank"
    assert settings.nats_url == SETTINGS["connection.nats_url"].default
    assert explicit("defaults.mode", args, environ)
    assert not explicit("defaults.chairman", args, environ)


def test_every_setting_is_declared_once_with_its_variable_flag_and_help() -> None:
    """Each setting is documented by a COUNCIL_* variable, a flag and a help text, none
    of them declared twice; the role configs are the settings' sections, so a role
    gets what the person set (here, the chairman's and the sandbox's)."""
    marks = [s.tunable for s in SETTINGS.values()]
    for mark in marks:
        assert mark.env.startswith("COUNCIL_")
        assert mark.flag.startswith("--")
        assert mark.help
    assert len({m.env for m in marks}) == len({m.flag for m in marks}) == len(marks)
    settings = load(None, {"COUNCIL_OPINIONS_DEADLINE": "7", "COUNCIL_SANDBOX_WALL": "3"})
    assert settings.council.opinions_deadline_s == 7.0
    assert settings.sandbox.wall_s == 3.0
    assert settings.defaults.members == ("qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b#2",
                                         "qwen2.5-coder-1.5b#3")  # fmt: skip


def test_bad_environment_value_is_a_clear_error() -> None:
    """A non-numeric COUNCIL_QUORUM stops with a message naming the variable."""
    result = council("ask", "q", env={"COUNCIL_QUORUM": "many"})
    assert result.returncode != 0
    assert "COUNCIL_QUORUM" in result.stderr


def test_ask_with_no_council_exits_3_with_advice(nats_server: EmbeddedNats) -> None:
    """Nobody on council.ask: exit code 3 and a hint to start a council."""
    result = council("ask", "hello?", "--nats", nats_server.url)
    assert result.returncode == 3
    assert "no council answered" in result.stderr
    assert "council up" in result.stderr


def test_ask_with_no_nats_server_exits_1_naming_the_url() -> None:
    """An unreachable NATS URL is reported, not a traceback."""
    url = f"nats://127.0.0.1:{free_port()}"
    result = council("ask", "hello?", "--nats", url)
    assert result.returncode == 1
    assert f"cannot reach NATS at {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_agents_with_an_unknown_model_exit_with_the_known_models(
    nats_server: EmbeddedNats,
) -> None:
    """`council agents --models nope` fails at start-up, listing what exists."""
    result = council(
        "agents", "--nats", nats_server.url, "--models", "nope", "--runtime", "embedded"
    )
    assert result.returncode == 1
    assert "unknown model 'nope'" in result.stderr
    assert "smollm2-135m" in result.stderr


async def test_trace_prints_every_council_message_readably(nats_server: EmbeddedNats, nc) -> None:
    """`council trace` prints subject and JSON per message, and marks non-JSON payloads."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "council.cli", "trace", "--nats", nats_server.url, "--no-health",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        ready = await asyncio.wait_for(process.stderr.readline(), 30)
        assert b"tracing" in ready
        await nc.publish("council.session.abc.opinion", json.dumps({"type": "opinion"}).encode())
        await nc.publish("council.ask", b"\x00garbage")
        await nc.flush()
        first = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        second = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
    finally:
        process.terminate()
        await process.wait()
    assert "council.session.abc.opinion" in first
    assert '"type": "opinion"' in first
    assert "council.ask" in second
    assert "not JSON" in second


@pytest.mark.parametrize("command", ["up", "agents", "chairman", "ask", "trace", "models"])
def test_every_command_documents_its_flags(command: str) -> None:
    """`council COMMAND --help` works and names the NATS flag where it applies."""
    result = council(command, "--help")
    assert result.returncode == 0
    if command != "models":
        assert "--nats" in result.stdout


def test_the_dashboard_refuses_to_listen_beyond_loopback_without_a_login() -> None:
    """Exposed and unguarded, `council dashboard` exits 2 naming the setting; on
    loopback (or with a login) the same check lets it start."""
    result = council("dashboard", env={"COUNCIL_DASHBOARD_ADDRESS": "0.0.0.0"})
    assert result.returncode == 2
    assert "COUNCIL_DASHBOARD_LOGIN" in result.stderr
    assert "0.0.0.0" in result.stderr
    for address, login in [("127.0.0.1", ""), ("::1", ""), ("localhost", ""), ("0.0.0.0", "pw")]:
        environ = {"COUNCIL_DASHBOARD_ADDRESS": address, "COUNCIL_DASHBOARD_LOGIN": login}
        settings = load(build_parser().parse_args(["dashboard"]), environ)
        assert unguarded(settings) == "", address


async def test_ask_that_outlasts_its_timeout_exits_4_not_failed(nats_server: EmbeddedNats) -> None:
    """A session still running when `council ask` stops waiting is not a failure: exit 4."""
    async with council_on_bus(nats_server) as running:
        for model in running.runtime.models:
            running.runtime.enqueue(model, HANG)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "council.cli", "ask", "hello?", "--nats", nats_server.url,
            env={**os.environ, "COUNCIL_ASK_TIMEOUT": "2", "COUNCIL_LOG_FORMAT": "json"},
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 4
    assert b"did not finish within 2 s" in stderr


async def test_ctrl_c_in_council_ask_stops_the_session_and_council_stop_names_a_finished_one(
    nats_server: EmbeddedNats,
) -> None:
    """SIGINT while the members write: `council ask` stops the session (exit 130, the
    session ends cancelled, the agents stop its calls); `council stop` on that
    session, now over, says no chairman runs it (exit 1)."""
    async with council_on_bus(nats_server) as running:
        for model in running.runtime.models:
            running.runtime.enqueue(model, HANG)
        env = {**os.environ, "COUNCIL_LOG_FORMAT": "json", "COUNCIL_NATS_URL": nats_server.url}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "council.cli", "ask", "hello?",
            env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stderr is not None
        line = b""
        while b"session" not in line:
            line = await asyncio.wait_for(process.stderr.readline(), 30)
        session_id = line.split()[1].rstrip(b":").decode()
        await serving(running.agents, len(running.runtime.models))
        process.send_signal(signal.SIGINT)
        _, rest = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 130, rest.decode()[-2000:]
        assert f"stopped session {session_id}".encode() in rest
        await settled_agents(running.agents)
        nc = await connect(nats_server.url, name="check")
        try:
            events = await stored_events(nc, session_id)
        finally:
            await nc.close()
        assert isinstance(events[-1], SessionCancelled)
        again = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "council.cli", "stop", session_id],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert again.returncode == 1
    assert "no chairman is running session" in again.stderr


async def test_a_conversation_is_listed_exported_and_deleted_from_the_command_line(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """Two turns asked on the bus: `council conversations` lists the thread (and finds
    it by a word of it), `council export` writes it as Markdown (with --full, every
    opinion) and as JSON (every event), `council delete` removes its turns and every
    event of its sessions, after which exporting it is an error."""
    async with council_on_bus(nats_server):
        first = await submit(nc, Question(question="What is the capital of France?"))
        [e async for e in follow(nc, first.session_id, timeout_s=30)]
        second = await submit(
            nc, Question(question="And its population?", conversation=first.conversation)
        )
        [e async for e in follow(nc, second.session_id, timeout_s=30)]
        cid = first.conversation

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return council(*args, env={"COUNCIL_NATS_URL": nats_server.url})

        listed = await asyncio.to_thread(cli, "conversations", "--search", "POPULATION")
        assert listed.returncode == 0, listed.stderr
        assert cid in listed.stdout
        markdown = await asyncio.to_thread(cli, "export", cid)
        assert markdown.returncode == 0, markdown.stderr
        assert "## 1. What is the capital of France?" in markdown.stdout
        assert "## 2. And its population?" in markdown.stdout
        assert "Opinion of" not in markdown.stdout
        full = await asyncio.to_thread(cli, "export", cid, "--full")
        assert "### Opinion of m1" in full.stdout
        exported = json.loads((await asyncio.to_thread(cli, "export", cid, "--json")).stdout)
        assert [t["session_id"] for t in exported["turns"]] == [first.session_id, second.session_id]
        assert exported["sessions"][second.session_id][-1]["type"] == "final_answer"

        deleted = await asyncio.to_thread(cli, "delete", cid)
        assert deleted.returncode == 0, deleted.stderr
        assert "2 session(s)" in deleted.stdout
        assert await stored_events(nc, first.session_id, wait_s=0.5) == []
        assert await stored_events(nc, second.session_id, wait_s=0.5) == []
        gone = await asyncio.to_thread(cli, "export", cid)
        assert gone.returncode == 1
        assert f"no conversation {cid}" in gone.stderr


@pytest.mark.parametrize("reviews", [0, 2])
def test_the_answer_shows_a_ranking_only_when_reviews_ran(reviews: int) -> None:
    """With no review (the members agreed) every member once showed +1.00 from 0
    reviews, which reads as a verdict; now it says there is no ranking."""
    entry = RankEntry(
        member="m1", label="Response A", rank=1, score=1.0, raw_mean=8.0 if reviews else 0.0,
        spread=0.0, reviews=reviews, margin=0.0,
    )  # fmt: skip
    final = FinalAnswer(
        session_id="anyone.s", seq=9, answer="4", chairman="m1", ranking=[entry], opinions=[],
        reviews=[], failed=[], usage={}, usage_by_model={}, latency_ms={},
    )  # fmt: skip
    console = Console(record=True, width=120)
    render(final, console)
    shown = console.export_text()
    assert ("Ranking (score" in shown) == bool(reviews)
    assert ("No review ran" in shown) == (not reviews)


def test_ctrl_c_on_council_up_stops_the_roles_before_the_server(tmp_path: Path) -> None:
    """A terminal's Ctrl-C is SIGINT to the whole process group: it once reached the
    embedded nats-server too, which died first, and the chairman then logged a screen
    of connection errors while it stopped. The server is out of the group now: the
    roles stop on a live server and `council up` stops it last."""
    port = free_port()
    env = {
        **os.environ,
        "COUNCIL_NATS_URL": f"nats://127.0.0.1:{port}",
        "COUNCIL_RUNTIME": "scripted",
        "COUNCIL_MEMBERS": "m1,m2,m3",
        "COUNCIL_CHAIRMAN": "m1",
        "COUNCIL_LOG_FORMAT": "json",
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "council.cli", "up", "--no-dashboard", "--no-api"],
        env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    seen = []
    assert up.stderr is not None
    for line in up.stderr:
        seen.append(line)
        if "council ready" in line:
            break
    os.killpg(up.pid, signal.SIGINT)  # as a terminal sends it
    _, rest = up.communicate(timeout=60)
    said = "".join(seen) + rest
    assert up.returncode == 130, said[-2000:]  # stopped by Ctrl-C, as a shell counts it
    errors = [line for line in said.splitlines() if '"level": "error"' in line]
    assert errors == []
    assert "stopping the council" in said
    assert not answers(f"nats://127.0.0.1:{port}")
