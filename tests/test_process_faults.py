"""Faults on real processes: agents killed mid-stage, the chairman killed and
restarted, nats-server restarted. Scripted runtime (each call takes a few
seconds, so there is time to kill something mid-stage); real `council`
processes on a real nats-server. Each test ends with its session finished once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from conftest import MEMBERS, SMALL_ENV, TEST_MODEL
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.faults import stop_processes
from council.bus import subjects
from council.bus.client.ask import follow, presets, roster, submit
from council.bus.codec import decode_health
from council.bus.errors import InvalidMessage, NoCouncil
from council.bus.events import (
    TERMINAL_EVENTS,
    AgentLost,
    FinalAnswer,
    MemberFailed,
    Opinion,
    Review,
    SessionEvent,
    SessionStarted,
    StageStarted,
)
from council.bus.messages import Document, NodeHealth, Question
from council.bus.transport.connection import connect
from council.bus.transport.server import EmbeddedNats
from council.bus.transport.stream import stored_events

CALL_MS = 3000
"""Every scripted call takes this long: time enough to kill a process mid-stage."""
OUTAGE_S = 10.0
"""nats-server down this long: the opinions finish meanwhile, and their events wait."""


class Processes:
    """`council` commands as real processes on one test's nats-server."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, node: str, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "COUNCIL_NATS_URL": self.url,
            "COUNCIL_RUNTIME": "scripted",
            "COUNCIL_SCRIPTED_DELAY_MS": str(CALL_MS),
            "COUNCIL_MEMBERS": "m1,m2,m3",
            "COUNCIL_CHAIRMAN": "m1",
            "COUNCIL_AGENT_SILENCE": "2",
            "COUNCIL_STRATEGY": "synthesize",
            "COUNCIL_HEARTBEAT": "0.2",
            "COUNCIL_NODE": node,
            "COUNCIL_LOG_FORMAT": "json",
            **extra,
        }

    def start(self, command: str, node: str, **extra: str) -> None:
        log = (self.tmp / f"{node}.log").open("ab")
        self.running[node] = subprocess.Popen(
            [sys.executable, "-m", "council.cli", command], env=self.env(node, **extra), stderr=log
        )

    def kill(self, node: str) -> None:
        """SIGKILL: no goodbye to the server, no cleanup; as a crash or power loss."""
        process = self.running.pop(node)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def log(self, node: str) -> str:
        return (self.tmp / f"{node}.log").read_text()

    def stop_all(self) -> None:
        stop_processes(list(self.running.values()))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server of the test's own: a killed process leaves no trace in other tests."""
    nats = EmbeddedNats(tmp_path / "js", log_file=tmp_path / "nats.log").start()
    yield nats
    nats.stop()


@pytest.fixture
def procs(server: EmbeddedNats, tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(server.url, tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture
async def nc(server: EmbeddedNats) -> AsyncIterator[Client]:
    client = await connect(server.url, name="test")
    yield client
    await client.close()


class Health:
    """The latest heartbeat of every node."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeHealth] = {}

    async def on_beat(self, msg: Msg) -> None:
        try:
            beat = decode_health(msg.data, msg.subject)
        except InvalidMessage:
            return
        self.nodes[beat.node] = beat


async def until(check: Callable[[], object], timeout_s: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.05)


async def agents_serving(nc: Client, *nodes: str) -> None:
    deadline = time.monotonic() + 60
    while not {f"{n}-agents" for n in nodes} <= {i.node for i in await roster(nc)}:
        assert time.monotonic() < deadline, f"agents {nodes} never answered the roster"


async def chairman_serving(nc: Client) -> None:
    for _ in range(150):
        try:
            await presets(nc, timeout_s=1)
            return
        except NoCouncil:
            await asyncio.sleep(0.2)
    raise AssertionError("no chairman answered in 30 s")


async def outcome(nc: Client, session_id: str, timeout_s: float = 90) -> list[SessionEvent]:
    """The session's stored events once it has ended (polled: survives a server restart)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            events = await stored_events(nc, session_id)
        except Exception:  # the server may be restarting
            events = []
        if events and isinstance(events[-1], TERMINAL_EVENTS):
            return events
        assert time.monotonic() < deadline, f"session {session_id} never ended: {events[-3:]}"
        await asyncio.sleep(0.5)


async def collect(nc: Client, session_id: str) -> list[SessionEvent]:
    return [e async for e in follow(nc, session_id, timeout_s=90)]


def assert_finished_once(events: list[SessionEvent]) -> FinalAnswer:
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq gap or duplicate"
    finals = [e for e in events if isinstance(e, TERMINAL_EVENTS)]
    assert len(finals) == 1, finals
    assert isinstance(finals[0], FinalAnswer), finals[0]
    return finals[0]


async def ask_and_wait_for_stage(nc: Client, stage: str) -> str:
    deadline = time.monotonic() + 120
    while True:
        try:
            accepted = await submit(nc, Question(question="What is 6 times 7?"), timeout_s=10)
            break
        except NoCouncil:  # the chairman is still starting (its local agent loads a model)
            assert time.monotonic() < deadline, "no chairman answered in 120 s"
    await until_stage(nc, accepted.session_id, stage)
    return accepted.session_id


async def until_stage(nc: Client, session_id: str, stage: str) -> None:
    deadline = time.monotonic() + 60
    while not any(
        isinstance(e, StageStarted) and e.stage == stage
        for e in await stored_events(nc, session_id)
    ):
        assert time.monotonic() < deadline, f"stage {stage} never started"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("stage", ["opinions", "reviews"])
async def test_agent_killed_mid_stage_its_requests_go_to_another_agent(
    procs: Processes, nc: Client, stage: str
) -> None:
    """Two agent processes serve the same models; the one holding requests is killed
    mid-stage: a named AgentLost event per lost request, and the other finishes them."""
    health = Health()
    await nc.subscribe(subjects.HEALTH, cb=health.on_beat)
    procs.start("chairman", "chair")
    procs.start("agents", "a")
    procs.start("agents", "b")
    await agents_serving(nc, "a", "b")
    session_id = await ask_and_wait_for_stage(nc, stage)
    await until(
        lambda: (
            sum(health.nodes[n].in_flight for n in ("a-agents", "b-agents") if n in health.nodes)
            > 0
        ),
        what="a request in flight",
    )
    await asyncio.sleep(0.5)  # past the first `working` note, which names the agent
    victim = max(("a", "b"), key=lambda n: getattr(health.nodes.get(f"{n}-agents"), "in_flight", 0))
    procs.kill(victim)

    events = await outcome(nc, session_id)
    final = assert_finished_once(events)
    lost = [e for e in events if isinstance(e, AgentLost)]
    assert lost, "no AgentLost event"
    assert {(e.node, e.stage, e.reissued) for e in lost} == {(f"{victim}-agents", stage, True)}
    assert not [e for e in events if isinstance(e, MemberFailed)]
    assert len([e for e in events if isinstance(e, Opinion)]) == 3
    assert len([e for e in events if isinstance(e, Review)]) == 6
    assert len(final.opinions) == 3
    assert len(final.reviews) == 6


async def test_agent_killed_mid_generation_on_a_real_model_is_taken_over(
    procs: Processes, nc: Client, test_model_path: Path, models_dir: Path
) -> None:
    """The same takeover with the embedded runtime and SmolLM2: two agent processes, the
    one generating opinions is killed, and the other one answers them."""
    real = {
        **SMALL_ENV,
        "COUNCIL_RUNTIME": "embedded",
        "COUNCIL_MEMBERS": ",".join(MEMBERS),
        "COUNCIL_CHAIRMAN": TEST_MODEL,
        "COUNCIL_MODELS_DIR": str(models_dir),
        "COUNCIL_THREADS": "1",
    }
    health = Health()
    await nc.subscribe(subjects.HEALTH, cb=health.on_beat)
    for node in ("chair", "a", "b"):
        procs.start("chairman" if node == "chair" else "agents", node, **real)
    await agents_serving(nc, "a", "b")
    session_id = await ask_and_wait_for_stage(nc, "opinions")
    await until(
        lambda: any(getattr(health.nodes.get(f"{n}-agents"), "in_flight", 0) for n in "ab"),
        what="an opinion being generated",
    )
    await asyncio.sleep(0.5)  # past the first `working` note, which names the agent
    victim = max("ab", key=lambda n: getattr(health.nodes.get(f"{n}-agents"), "in_flight", 0))
    procs.kill(victim)

    events = await outcome(nc, session_id, timeout_s=300)
    final = assert_finished_once(events)
    lost = [e for e in events if isinstance(e, AgentLost)]
    assert lost
    assert {e.node for e in lost} == {f"{victim}-agents"}
    assert not [e for e in events if isinstance(e, MemberFailed)]
    assert len(final.opinions) == 3
    assert all(o.usage.completion_tokens > 0 for o in final.opinions)


async def test_agent_killed_with_no_one_to_take_over_fails_its_member_by_name(
    procs: Processes, nc: Client
) -> None:
    """The only agent of one model dies mid-stage 1: that member fails as agent_lost and
    the session goes on with the quorum."""
    procs.start("chairman", "chair")
    procs.start("agents", "a", COUNCIL_AGENT_MODELS="m1,m2")
    procs.start("agents", "only-m3", COUNCIL_AGENT_MODELS="m3")
    await agents_serving(nc, "a", "only-m3")
    session_id = await ask_and_wait_for_stage(nc, "opinions")
    await asyncio.sleep(0.5)  # the opinion requests have reached their agents
    procs.kill("only-m3")

    events = await outcome(nc, session_id)
    final = assert_finished_once(events)
    failed = [e for e in events if isinstance(e, MemberFailed)]
    assert [(f.member, f.stage, f.reason) for f in failed] == [("m3", "opinions", "agent_lost")]
    assert "only-m3-agents" in failed[0].detail
    assert [f.member for f in final.failed] == ["m3"]
    assert {o.member for o in final.opinions} == {"m1", "m2"}
    assert "a-agents" in procs.log("a")  # the survivor kept serving
    assert procs.running["a"].poll() is None


@pytest.mark.parametrize("stage", ["opinions", "reviews"])
async def test_chairman_killed_and_restarted_resumes_its_session_once(
    procs: Processes, nc: Client, stage: str
) -> None:
    """SIGKILL the chairman mid-session; started again under the same node name it
    rebuilds the session from the COUNCIL stream and finishes it: one final answer."""
    procs.start("agents", "a")
    procs.start("chairman", "chair")
    await agents_serving(nc, "a")
    session_id = await ask_and_wait_for_stage(nc, stage)
    procs.kill("chair")
    before = await stored_events(nc, session_id)
    assert not isinstance(before[-1], TERMINAL_EVENTS)
    procs.start("chairman", "chair")

    events = await outcome(nc, session_id)
    final = assert_finished_once(events)
    assert events[: len(before)] == before  # resumed, not restarted
    assert len(final.opinions) == 3
    assert len(final.reviews) == 6
    assert '"event": "session_resumed"' in procs.log("chair")
    # a new question on the restarted chairman still works
    second = await submit(nc, Question(question="And 7 times 8?"), timeout_s=30)
    assert_finished_once(await outcome(nc, second.session_id))


async def test_a_file_survives_a_chairman_restart_between_turns(
    procs: Processes, nc: Client
) -> None:
    """A large file (sent ahead to the object store) goes with the first question; the
    chairman is SIGKILLed and started again; the follow-up, run by the new process,
    still gives every stage the file, read back from the stream."""
    procs.start("agents", "a", COUNCIL_SCRIPTED_DELAY_MS="100")  # nothing is killed mid-call
    procs.start("chairman", "chair")
    await agents_serving(nc, "a")
    lease = "Clause 7: the lease ends on 31 March 2027.\n" + "A line of filler.\n" * 2000
    first = await submit(
        nc,
        Question(
            question="When does the lease end?", documents=[Document(name="lease.txt", text=lease)]
        ),
        timeout_s=30,
    )
    assert_finished_once(await outcome(nc, first.session_id))
    procs.kill("chair")
    procs.start("chairman", "chair")
    await chairman_serving(nc)
    second = await submit(
        nc, Question(question="Which clause?", conversation=first.conversation), timeout_s=30
    )
    events = await outcome(nc, second.session_id)
    assert_finished_once(events)
    started = events[0]
    assert isinstance(started, SessionStarted)
    (kept,) = started.plan.conversation_documents
    assert kept.name == "lease.txt"
    assert kept.text.startswith("Clause 7: the lease ends on 31 March 2027.")


async def test_a_session_whose_chairman_never_returns_is_taken_over_by_another(
    procs: Processes, nc: Client
) -> None:
    """SIGKILL the chairman mid-session and start one under another node name: once
    the dead one's lease lapses the other takes the session over and finishes it."""
    procs.start("agents", "a")
    procs.start("chairman", "chair", COUNCIL_SESSION_LEASE="3")
    await agents_serving(nc, "a")
    session_id = await ask_and_wait_for_stage(nc, "opinions")
    procs.kill("chair")
    procs.start("chairman", "other", COUNCIL_SESSION_LEASE="3")

    final = assert_finished_once(await outcome(nc, session_id))
    assert len(final.opinions) == 3
    assert '"event": "session_taken_over"' in procs.log("other")


async def test_nats_server_restarted_mid_session_everyone_reconnects_and_it_finishes(
    procs: Processes, server: EmbeddedNats, nc: Client
) -> None:
    """Stop nats-server during stage 1 for longer than a stage's calls take, and start
    it again (same port, same JetStream store): the clients reconnect, the
    chairman's events wait for the stream instead of being lost, the session
    finishes once, and a new one runs."""
    procs.start("agents", "a")
    procs.start("chairman", "chair")
    await agents_serving(nc, "a")
    session_id = await ask_and_wait_for_stage(nc, "opinions")
    followed = asyncio.create_task(collect(nc, session_id))  # as `council ask` follows
    await asyncio.sleep(0.2)
    server.stop()
    await asyncio.sleep(OUTAGE_S)
    server.start()

    events = await outcome(nc, session_id)
    final = assert_finished_once(events)
    assert await asyncio.wait_for(followed, 60) == events
    assert len(final.opinions) + len(final.failed) == 3
    await agents_serving(nc, "a")
    second = await submit(nc, Question(question="And 7 times 8?"), timeout_s=30)
    assert_finished_once(await outcome(nc, second.session_id))
    assert all(p.poll() is None for p in procs.running.values())


async def test_council_eval_interrupted_leaves_a_report_and_a_rerun_resumes(
    procs: Processes, nc: Client, tmp_path: Path
) -> None:
    """Ctrl-C during `council eval`: exit 130, a report of the questions done, and the
    records kept; the rerun asks only the rest."""
    procs.start("agents", "a", COUNCIL_SCRIPTED_DELAY_MS="200")
    procs.start("chairman", "chair", COUNCIL_SCRIPTED_DELAY_MS="200")
    await agents_serving(nc, "a")
    questions = tmp_path / "four.jsonl"
    questions.write_text(
        "".join(
            f'{{"id": "q{i}", "question": "What is {i} + {i}?", "check": {{"number": {2 * i}}}}}\n'
            for i in range(4)
        )
    )
    env = procs.env("eval", COUNCIL_EVALS_DIR=str(tmp_path / "evals"))
    command = [
        sys.executable,
        "-m",
        "council.cli",
        "eval",
        str(questions),
        "--name",
        "t",
        "--best-only",
        "--no-tool",
    ]
    records = tmp_path / "evals" / "four--t.jsonl"
    interrupted = await asyncio.create_subprocess_exec(
        *command, env=env, stderr=asyncio.subprocess.PIPE
    )
    await until(lambda: records.exists() and records.read_text().count("\n") >= 1, 120)
    interrupted.send_signal(signal.SIGINT)
    stderr = (await asyncio.wait_for(interrupted.communicate(), 60))[1].decode()
    assert interrupted.returncode == 130, stderr[-2000:]
    done = records.read_text().count("\n")
    assert 1 <= done < 4
    report = json.loads((tmp_path / "evals" / "four--t.report.json").read_text())
    assert (report["answered"], report["questions"]) == (done, 4)
    assert "rerun to resume" in stderr

    rerun = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stderr = (await asyncio.wait_for(rerun.communicate(), 300))[1].decode()
    assert rerun.returncode == 0, stderr[-2000:]
    assert f"{done} already in" in stderr
    ids = [json.loads(line)["id"] for line in records.read_text().splitlines()]
    assert sorted(ids) == [f"q{i}" for i in range(4)]
    report = json.loads((tmp_path / "evals" / "four--t.report.json").read_text())
    assert report["answered"] == 4
