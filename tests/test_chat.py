"""`council chat` as a process: a follow-up on the real model, Ctrl-C stopping a turn."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest
from helpers import serving, settled_agents
from nats.aio.client import Client
from test_bus import council

from council.agents.runtimes.scripted import HANG
from council.bus.transport.connection import connect
from council.bus.transport.server import EmbeddedNats
from council.bus.transport.stream import conversations


def chat(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "council.cli", "chat"],
        env={**os.environ, **env, "COUNCIL_LOG_FORMAT": "json"},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.processes
def test_a_follow_up_in_council_chat_sees_the_first_turn_on_the_real_model(
    council_processes: dict[str, str],
) -> None:
    """Two lines, one conversation: the second session's members saw the first turn;
    the conversation then exports with every opinion and is deleted."""
    process = chat(council_processes)
    out, err = process.communicate(
        "What is the capital of France?\nAnd its population?\n/quit\n", timeout=600
    )
    assert process.returncode == 0, err[-2000:]
    assert out.count("conversation ") >= 2, out
    threads = asyncio.run(stored_threads(council_processes["COUNCIL_NATS_URL"]))
    (turns,) = [t for t in threads if t[0].question == "What is the capital of France?"][-1:]
    assert [t.question for t in turns] == ["What is the capital of France?", "And its population?"]
    assert turns[0].answer in out

    # the real conversation exported with every opinion, then deleted from the stream
    cid = turns[0].conversation
    full = cli(council_processes, "export", cid, "--full")
    assert full.returncode == 0, full.stderr[-2000:]
    assert "## 2. And its population?" in full.stdout
    assert full.stdout.count("### Opinion of") >= 4  # at least two per turn
    deleted = cli(council_processes, "delete", cid)
    assert deleted.returncode == 0, deleted.stderr[-2000:]
    assert "2 session(s)" in deleted.stdout
    gone = cli(council_processes, "export", cid)
    assert gone.returncode == 1
    assert f"no conversation {cid}" in gone.stderr


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "council.cli", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def stored_threads(url: str) -> list[list]:
    nc = await connect(url, name="check")
    try:
        return list((await conversations(nc)).values())
    finally:
        await nc.close()


async def test_ctrl_c_in_council_chat_stops_the_turn_not_the_program(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A turn whose members never answer: SIGINT stops its session (the agents free
    their calls) and the chat goes on to the next line."""
    async with council(nats_server) as c:
        for model in c.runtime.models:
            c.runtime.enqueue(model, HANG)
        process = await asyncio.to_thread(chat, {"COUNCIL_NATS_URL": nats_server.url})
        assert process.stdin is not None
        process.stdin.write("Will you answer?\n")
        process.stdin.flush()
        await serving(c.agents, len(c.runtime.models))
        process.send_signal(signal.SIGINT)
        await settled_agents(c.agents)
        process.stdin.write("Now?\n/quit\n")
        process.stdin.flush()
        out, err = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == 0, err[-2000:]
    assert "stopped during its opinions" in out
    assert out.count("conversation ") == 1  # the second turn answered
    threads = [t for t in (await conversations(nc)).values() if t[0].question == "Now?"]
    assert len(threads) == 1  # a new conversation: the stopped turn left none to follow


async def test_a_preset_chosen_in_council_chat_is_used_and_recorded(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """`/preset` lists the chairman's presets (so does `council presets`), an unknown one
    is refused with the list, a known one answers the next turn and its turn records
    it; `council ask --preset` does the same."""
    async with council(nats_server) as c:
        env = {"COUNCIL_NATS_URL": nats_server.url}
        listed = await asyncio.to_thread(cli, env, "presets")
        assert listed.returncode == 0, listed.stderr[-2000:]
        for name in ("default", "fast", "deliberate", "methods", "mixed"):
            assert name in listed.stdout
        process = await asyncio.to_thread(chat, env)
        out, err = await asyncio.to_thread(
            process.communicate, "/preset\n/preset nosuch\n/preset fast\nQuick?\n/quit\n", 60
        )
        assert process.returncode == 0, err[-2000:]
        assert "no preset nosuch" in out
        assert "preset: fast" in out
        assert "reviews skipped · synthesis skipped" in out  # fast: a majority stands
        assert "· preset fast ·" in out
        asked = await asyncio.to_thread(cli, env, "ask", "--preset", "deliberate", "Slowly?")
        assert asked.returncode == 0, asked.stderr[-2000:]
        assert "preset deliberate" in asked.stderr
        assert len(c.runtime.history) > 0
    turns = {t[0].question: t[0] for t in (await conversations(nc)).values()}
    assert turns["Quick?"].preset == "fast"
    assert turns["Slowly?"].preset == "deliberate"
