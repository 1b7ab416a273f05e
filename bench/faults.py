"""A fault campaign: many sessions while a driver kills and restarts what they run on.

Real `council agents` and `council chairman` processes (two of each) on a
three-node NATS cluster with the COUNCIL stream at three replicas; a client
keeps a few sessions in flight; and a driver, at random moments, injects one
of these faults:

- ``kill_agent``: SIGKILL an agent process, started again 1-3 s later;
- ``partition_agent``: cut an agent off the network for 8 s, not killed: each
  agent reaches NATS through relays of its own, and a cut relay carries
  nothing while every connection through it stays open, as a partitioned
  network does (the agent goes on generating; its replies wait);
- ``freeze_agent``: SIGSTOP an agent for 8 s, then SIGCONT;
- ``kill_chairman``: SIGKILL a chairman, started again under its name 1-3 s later;
- ``replace_chairman``: SIGKILL a chairman for good and start one under a new
  name: the sessions of the dead one are taken over when their leases lapse;
- ``kill_nats_node``: SIGKILL a NATS node (never two at once), started again 5 s later.

Meanwhile a second person floods: every 8-16 s, 12 questions at once, more than the
chairmen's fair share (3 of one person at a time, 6 waiting) lets them run, so some
wait their turn and some are refused busy. A recovery that fails (a node that will not
start again) fails the campaign.

Every session in the stream must end exactly once (``final_answer``, or
``session_failed`` with a reason) with gap-free events. Printed: sessions run,
faults injected, sessions lost (must be 0), and the slowest session against
the median (the longest a session waited on a fault).

    python -m bench.faults [--sessions 300] [--real] [--quick] [--json]

``--real`` runs the test council on a real model (three persona copies of
SmolLM2-135M, pulled with `council models pull smollm2-135m`) instead of the
scripted runtime, with fewer sessions (``--sessions`` still applies).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import nats.errors
from nats.aio.client import Client

from bench.cluster import Cluster, start_cluster
from bench.common import Table, machine, median, parser, quiet_logs, report
from bench.fault_checks import ended, every_session, verify
from council.bus.client.ask import submit
from council.bus.errors import CouncilError, QuestionRejected
from council.bus.messages import Question
from council.bus.transport.connection import Credentials, connect
from council.bus.transport.server import free_port

SCRIPTED = {
    "COUNCIL_RUNTIME": "scripted",
    "COUNCIL_SCRIPTED_DELAY_MS": "300",
    "COUNCIL_MEMBERS": "m1,m2,m3",
    "COUNCIL_CHAIRMAN": "m1",
}
REAL_MODEL = "smollm2-135m"
REAL = {
    "COUNCIL_RUNTIME": "embedded",
    "COUNCIL_MEMBERS": ",".join(f"{REAL_MODEL}@{p}" for p in ("careful", "concise", "skeptic")),
    "COUNCIL_CHAIRMAN": REAL_MODEL,
    "COUNCIL_OPINION_MAX_TOKENS": "96",
    "COUNCIL_REVIEW_MAX_TOKENS": "64",
    "COUNCIL_SYNTHESIS_MAX_TOKENS": "128",
    "COUNCIL_THREADS": "1",
}
COMMON = {
    "COUNCIL_STRATEGY": "synthesize",  # every stage runs, so faults land in every stage
    "COUNCIL_PERSON_SESSIONS": "3",  # the flooding person waits in line and is refused
    "COUNCIL_QUEUE": "6",
    "COUNCIL_STREAM_REPLICAS": "3",
    "COUNCIL_SESSION_LEASE": "4",
    "COUNCIL_AGENT_SILENCE": "3",
    "COUNCIL_HEARTBEAT": "0.5",
    "COUNCIL_LOG_FORMAT": "json",
    "COUNCIL_LOG_LEVEL": "warning",
}
FAULTS = (
    "kill_agent", "partition_agent", "freeze_agent", "kill_chairman", "replace_chairman",
    "kill_nats_node",
)  # fmt: skip


class Link:
    """A TCP relay to one NATS node that can be cut and healed: cut, it carries nothing
    but keeps its connections open, so neither end sees a disconnection."""

    def __init__(self, target: str) -> None:
        parsed = urlparse(target)
        self.target = (parsed.hostname or "127.0.0.1", parsed.port or 4222)
        self.port = free_port()
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    def cut(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    async def close(self) -> None:
        self.heal()
        if self._server:
            self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:  # the node is down: as a refused connection
            writer.close()
            return
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer),
                self._pipe(up_reader, writer),
                return_exceptions=True,
            )
        except asyncio.CancelledError:  # the campaign is over
            pass
        finally:
            writer.close()
            up_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self._open.wait()
            writer.write(data)
            await writer.drain()
        writer.close()


async def links_to(cluster: Cluster) -> list[Link]:
    links = [Link(node.url) for node in cluster.nodes]
    for link in links:
        await link.start()
    return links


@dataclass
class Fleet:
    """The council's processes, by node name."""

    urls: str
    logs: Path
    env: dict[str, str]
    links: dict[str, list[Link]] = field(default_factory=dict)
    """Each agent's own relays to the NATS nodes (chairmen connect directly)."""
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, node: str) -> None:
        command = ["agents"] if node.startswith("a") else ["chairman", "--no-local-agent"]
        urls = ",".join(link.url for link in self.links[node]) if node in self.links else self.urls
        self.running[node] = subprocess.Popen(
            [sys.executable, "-m", "council.cli", *command],
            env={**os.environ, **self.env, "COUNCIL_NATS_URL": urls, "COUNCIL_NODE": node},
            stderr=(self.logs / f"{node}.log").open("ab"),
        )

    def kill(self, node: str) -> None:
        process = self.running.pop(node)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def signal(self, node: str, sig: signal.Signals) -> None:
        if node in self.running:  # else killed meanwhile (and started afresh, or not)
            self.running[node].send_signal(sig)

    def nodes(self, prefix: str) -> list[str]:
        return sorted(n for n in self.running if n.startswith(prefix))

    def stop(self) -> None:
        for process in self.running.values():
            process.send_signal(signal.SIGCONT)  # a frozen one cannot stop
        stop_processes(list(self.running.values()))


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], wait_s: float = 20) -> None:
    """SIGTERM all, then wait for each; one that will not stop is killed."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass
class Driver:
    """Injects faults at random moments until told to stop; restarts what it broke."""

    fleet: Fleet
    cluster: Cluster
    rng: random.Random
    every_s: tuple[float, float]
    injected: Counter[str] = field(default_factory=Counter)
    unrecovered: list[str] = field(default_factory=list)
    """Recoveries that failed (a node that would not start again, say): the campaign
    then fails, whatever the sessions did, as it no longer tests what it says."""
    _pending: set[asyncio.Task[None]] = field(default_factory=set)
    _chairmen: int = 2
    _node_down: bool = False

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.every_s))
            except TimeoutError:
                self.inject(self.rng.choice(FAULTS))
        await asyncio.gather(*self._pending)

    def inject(self, kind: str) -> None:
        agents, chairmen = self.fleet.nodes("a"), self.fleet.nodes("c")
        if kind in ("kill_agent", "partition_agent", "freeze_agent") and agents:
            node = self.rng.choice(agents)
            if kind == "kill_agent":
                self.fleet.kill(node)
                self._later(self.rng.uniform(1, 3), lambda: self.fleet.start(node))
            elif kind == "partition_agent":
                self._set_links(node, cut=True)
                self._later(8, lambda: self._set_links(node, cut=False))
            else:
                self.fleet.signal(node, signal.SIGSTOP)
                self._later(8, lambda: self.fleet.signal(node, signal.SIGCONT))
        elif kind in ("kill_chairman", "replace_chairman") and chairmen:
            node = self.rng.choice(chairmen)
            self.fleet.kill(node)
            if kind == "kill_chairman":
                self._later(self.rng.uniform(1, 3), lambda: self.fleet.start(node))
            else:
                self._chairmen += 1
                self.fleet.start(f"c{self._chairmen}")
        elif kind == "kill_nats_node" and not self._node_down:
            name = self.rng.choice(self.cluster.names)
            self.cluster.kill(name)
            self._node_down = True
            self._later(5, lambda: self._restart_node(name))
        else:
            return
        self.injected[kind] += 1

    def _set_links(self, agent: str, *, cut: bool) -> None:
        for link in self.fleet.links[agent]:
            link.cut() if cut else link.heal()

    def _restart_node(self, name: str) -> None:
        self.cluster.node(name).start()
        self._node_down = False

    def _later(self, delay_s: float, action: Callable[[], None]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay_s)
            try:
                action()
            except Exception as e:  # noqa: BLE001 - any failure to recover is the finding
                self.unrecovered.append(f"{type(e).__name__}: {e}")

        task = asyncio.create_task(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


async def ask_all(nc: Client, count: int, in_flight: int, timeout_s: float) -> int:
    """Ask ``count`` questions, ``in_flight`` at a time, each waited for to its end (or
    ``timeout_s``); the number the council never accepted."""
    gate = asyncio.Semaphore(in_flight)
    refused = 0

    async def one(i: int) -> None:
        nonlocal refused
        async with gate:
            for _ in range(60):
                try:
                    accepted = await submit(nc, Question(question=f"What is {i} plus 7?"))
                    break
                except (CouncilError, nats.errors.Error):  # busy, or a node failing over
                    await asyncio.sleep(1)
            else:
                refused += 1
                return
            await ended(nc, accepted.session_id, timeout_s)

    await asyncio.gather(*(one(i) for i in range(count)))
    return refused


@dataclass
class Flood:
    """A second person who asks a burst of questions at once, again and again: each is
    accepted (run, or queued in the fair share) or refused busy, never lost."""

    nc: Client
    rng: random.Random
    every_s: tuple[float, float]
    burst: int = 12
    accepted: int = 0
    busy: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.every_s))
            except TimeoutError:
                await asyncio.gather(*(self._one(i) for i in range(self.burst)))

    async def _one(self, i: int) -> None:
        try:
            await submit(self.nc, Question(question=f"What is {i} times 3?"))
            self.accepted += 1
        except QuestionRejected as exc:
            self.busy += exc.reason == "busy"
        except (CouncilError, nats.errors.Error):  # a node failing over: not asked
            pass


async def campaign(sessions: int, *, real: bool, seed: int, quick: bool) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="council-faults-") as tmp:
        root = Path(tmp)
        cluster = start_cluster(root / "nats")
        env = {**COMMON, **(REAL if real else SCRIPTED), "XDG_DATA_HOME": str(root / "data")}
        fleet = Fleet(cluster.urls, root, env)
        fleet.links = {agent: await links_to(cluster) for agent in ("a1", "a2")}
        every_s = (4.0, 10.0) if real else (2.0, 5.0)
        driver = Driver(fleet, cluster, rng, every_s)
        try:
            for node in ("a1", "a2", "c1", "c2"):
                fleet.start(node)
            nc = await connect(cluster.urls, name="faults", initial_wait_s=10)
            flooder = await connect(
                cluster.urls, name="flood", credentials=Credentials("flood", "x")
            )
            flood = Flood(flooder, rng, (20.0, 40.0) if real else (8.0, 16.0))
            await ask_all(nc, 2 if quick else 3, 3, 300)  # warm: models loaded, stream made
            before = set(await every_session(nc))
            stop = asyncio.Event()
            faults = asyncio.create_task(driver.run(stop))
            flooding = asyncio.create_task(flood.run(stop))
            started = time.monotonic()
            refused = await ask_all(nc, sessions, 4, 600 if real else 120)
            stop.set()
            await faults
            await flooding
            await flooder.close()
            wall_s = time.monotonic() - started
            verdict = await verify(nc, 180, skip=before)
            await nc.close()
        finally:
            fleet.stop()
            for link in [link for links in fleet.links.values() for link in links]:
                await link.close()
            cluster.stop()
    typical = median(verdict.seconds) if verdict.seconds else 0.0
    slowest = max(verdict.seconds, default=0.0)
    return {
        "runtime": "embedded " + REAL_MODEL if real else "scripted, 300 ms a call",
        "sessions_asked": sessions,
        "never_accepted": refused,
        "flood_accepted": flood.accepted,
        "flood_busy": flood.busy,
        "sessions_in_stream": verdict.sessions,
        "answered": verdict.answered,
        "failed": dict(verdict.failed),
        "failed_members": dict(verdict.failed_members),
        "lost": len(verdict.lost),
        "broken": len(verdict.broken),
        "broken_because": verdict.broken,
        "faults": dict(driver.injected),
        "faults_total": sum(driver.injected.values()),
        "unrecovered": driver.unrecovered,
        "session_median_s": round(typical, 2),
        "session_max_s": round(slowest, 2),
        "longest_wait_on_a_fault_s": round(slowest - typical, 2),
        "wall_s": round(wall_s, 1),
        "seed": seed,
        **machine(),
    }


def tables(result: dict[str, Any]) -> list[Table]:
    outcome = Table(
        f"Fault campaign ({result['runtime']}; seed {result['seed']}, {result['wall_s']} s)",
        ["asked", "in stream", "answered", "failed (reason: n)", "lost", "broken", "unaccepted"],
    )
    failed = ", ".join(f"{r}: {n}" for r, n in result["failed"].items()) or "0"
    outcome.rows.append(
        [
            result["sessions_asked"], result["sessions_in_stream"], result["answered"], failed,
            result["lost"], result["broken"], result["never_accepted"],
        ]
    )  # fmt: skip
    flood = Table(
        "A second person flooding (bursts of 12 at once; 3 of theirs at a time, 6 waiting)",
        ["accepted (run or queued)", "busy"],
        [[result["flood_accepted"], result["flood_busy"]]],
    )
    faults = Table("Faults injected", [*FAULTS, "total"])
    faults.rows.append([result["faults"].get(k, 0) for k in FAULTS] + [result["faults_total"]])
    timing = Table("Session time, s", ["median", "max", "longest wait on a fault"])
    timing.rows.append(
        [
            result["session_median_s"],
            result["session_max_s"],
            result["longest_wait_on_a_fault_s"],
        ]
    )
    out = [outcome, flood, faults, timing]
    if unrecovered := result.get("unrecovered"):
        out.append(Table("Recoveries that failed", ["error"], [[e] for e in unrecovered]))
    if broken := result.get("broken_because"):
        out.append(Table("Broken sessions", ["session", "why"], [list(b) for b in broken.items()]))
    if why := result.get("failed_members"):
        out.append(
            Table(
                "In the failed sessions, why members failed",
                ["stage: reason", "members"],
                sorted(([k, n] for k, n in why.items()), key=lambda row: -row[1]),
            )
        )
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=0, help="default 300 (--real: 24)")
    p.add_argument("--real", action="store_true", help="a real model instead of scripted")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    quiet_logs()
    sessions = args.sessions or (6 if args.quick else 24 if args.real else 300)
    result = asyncio.run(campaign(sessions, real=args.real, seed=args.seed, quick=args.quick))
    report(result, tables(result), args)
    if result["lost"] or result["broken"] or result["unrecovered"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
