"""What the benchmarks share: output, statistics, and the two ways to run a session.

A session runs either over NATS (an embedded nats-server, ``AgentService`` and
``ChairmanService`` in this process, asked through ``council.bus.client.ask`` like
any client) or in-process (the same ``Conductor`` and agent handlers, called
directly, events dropped). Same runtime, same stages: the difference is what
the bus costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from council.agents.runtimes.router import RoutedRuntime
from council.agents.runtimes.scripted import ScriptedRuntime
from council.agents.service import AgentService
from council.assembly.logs import configure_logging
from council.assembly.wiring import LocalAgents, local_council
from council.bus import subjects
from council.bus.client.ask import follow, submit
from council.bus.events import FinalAnswer, SessionEvent, SessionFailed
from council.bus.messages import Question, ReviewMode
from council.bus.transport.connection import connect
from council.bus.transport.server import EmbeddedNats
from council.bus.transport.stream import ensure_stream
from council.chairman.admission import Defaults, admit
from council.chairman.conductor import Conductor
from council.chairman.config import CouncilConfig
from council.chairman.core import Plan
from council.chairman.service import ChairmanService

RESULTS = Path(__file__).parent / "results"
"""Saved runs (``--save``): what `council docs` renders into docs/performance.md."""
QUESTION = "What is the capital of Australia, and why is it not Sydney?"


# --- command line and output -------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.add_argument(
        "--save",
        nargs="?",
        const="",
        metavar="VARIANT",
        help="also save the result and tables in bench/results/<benchmark>[-VARIANT].json "
        "(for `council docs`)",
    )
    return p


def quiet_logs() -> None:
    """Warnings only: rendering info lines would be measured as council's cost."""
    configure_logging("json", "warning")


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def render(self) -> str:
        cells = [self.headers] + [[_cell(v) for v in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.headers))]
        lines = [
            self.title,
            "  ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=True)),
        ]
        lines.append("  ".join("-" * w for w in widths))
        lines += [
            "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells[1:]
        ]
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def report(result: dict[str, Any], tables: Sequence[Table], args: argparse.Namespace) -> None:
    """Tables for people, then one JSON line for scripts; with ``--save``, both in
    ``bench/results/<benchmark>.json``, where `council docs` renders the tables."""
    if not args.json:
        for t in tables:
            print(t.render(), end="\n\n")
    print(json.dumps(result))
    if args.save is not None:
        benchmark = Path(sys.argv[0]).stem
        name = f"{benchmark}-{args.save}" if args.save else benchmark
        saved = {
            "command": f"python -m bench.{benchmark} {' '.join(sys.argv[1:])}".strip(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
            "tables": [
                {
                    "title": t.title,
                    "headers": t.headers,
                    "rows": [[_cell(v) for v in r] for r in t.rows],
                }
                for t in tables
            ],
            "result": result,
        }
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps(saved, indent=1) + "\n")


def machine() -> dict[str, Any]:
    """Load average and cores: a busy machine makes every figure worse."""
    return {"cores": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 2)}


# --- statistics ----------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def medians(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over runs that measured the same figures, to 2 places."""
    return {k: round(median([r[k] for r in runs]), 2) for k in runs[0]}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs."""
    return statistics.linear_regression(xs, ys).slope


# --- sessions --------------------------------------------------------------------


def models(n: int) -> list[str]:
    return [f"m{i}" for i in range(1, n + 1)]


def question(n: int, mode: ReviewMode = "pairwise") -> Question:
    return Question(question=QUESTION, members=models(n), chairman="m1", mode=mode)


def calls_per_session(n: int, mode: ReviewMode = "pairwise") -> int:
    """LLM calls of a session with no failures: opinions, reviews, one synthesis."""
    return n + (n * (n - 1) if mode == "pairwise" else n) + 1


async def _discard(event: SessionEvent) -> None:
    return None


def _finished(outcome: FinalAnswer | SessionFailed | SessionEvent | None) -> FinalAnswer:
    if not isinstance(outcome, FinalAnswer):
        raise RuntimeError(f"session did not finish: {outcome!r}")
    return outcome


async def local_session(runtime: ScriptedRuntime, q: Question) -> FinalAnswer:
    """One session in-process: admission, the three stages, events dropped."""
    plan = admit(
        q,
        Defaults(tuple(q.members), q.chairman, strategy="synthesize"),
        quorum=2,
        opinion_models=set(runtime.models),
        synthesis_models=set(runtime.models),
    )
    assert isinstance(plan, Plan), plan
    config = CouncilConfig(conclude=False)
    outcome = await Conductor(plan, config, LocalAgents(runtime), _discard).run()
    _trim(runtime)
    return _finished(outcome)


async def bus_session(nc: Client, q: Question, timeout_s: float = 120.0) -> FinalAnswer:
    """One session as any client asks it: submit on council.ask, follow the events."""
    accepted = await submit(nc, q, timeout_s=timeout_s)
    last: SessionEvent | None = None
    async for last in follow(nc, accepted.session_id, timeout_s=timeout_s):  # noqa: B007
        pass
    return _finished(last)


def _trim(runtime: ScriptedRuntime) -> None:
    """The scripted runtime keeps every call; drop them so long runs stay flat."""
    if len(runtime.history) > 1000:
        runtime.history.clear()


CONSUMER_CAP = 100_000
"""nats-server 2.15 caps a stream at 1,000 consumers unless the stream sets a cap, and each
``follow`` leaves its ordered consumer on the server for ~5 s after it returns: past about
200 sessions/s, asks fail with "maximum consumers limit reached". The benchmarks create the
COUNCIL stream with a higher cap so they can measure beyond that (see README, Performance)."""


class _RaisedConsumerCap:
    """A JetStream context whose add_stream sets ``max_consumers``; the rest is forwarded."""

    def __init__(self, js: JetStreamContext, cap: int) -> None:
        self._js = js
        self._cap = cap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def add_stream(self, config: StreamConfig, **params: Any) -> Any:
        return await self._js.add_stream(replace(config, max_consumers=self._cap), **params)


async def create_stream(nc: Client, cap: int = CONSUMER_CAP) -> None:
    """The project's COUNCIL stream (``ensure_stream``), with a consumer cap of ``cap``."""
    await ensure_stream(cast(JetStreamContext, _RaisedConsumerCap(nc.jetstream(), cap)))
    info = await nc.jetstream().stream_info(subjects.STREAM)
    if info.config.max_consumers != cap:
        raise RuntimeError(f"COUNCIL stream exists with max_consumers={info.config.max_consumers}")


@dataclass
class BusCouncil:
    server: EmbeddedNats
    runtime: ScriptedRuntime
    agents: AgentService
    chairman: ChairmanService
    client: Client

    async def session(self, q: Question) -> FinalAnswer:
        final = await bus_session(self.client, q)
        _trim(self.runtime)
        return final


@asynccontextmanager
async def bus_council(
    store: Path,
    served: list[str],
    *,
    delay_s: float = 0.0,
    concurrency: int = 2,
    max_sessions: int = 16,
) -> AsyncIterator[BusCouncil]:
    """nats-server, scripted agents serving ``served``, a chairman and a client, all ready."""
    runtime = ScriptedRuntime(served, delay_s=delay_s)
    routed = RoutedRuntime.serving(runtime, served)
    defaults = Defaults(tuple(served[:3]), served[0], strategy="synthesize")
    async with serving(
        store, routed, defaults, concurrency=concurrency, max_sessions=max_sessions
    ) as (server, agents, chairman, client):
        yield BusCouncil(server, runtime, agents, chairman, client)


@asynccontextmanager
async def serving(
    store: Path,
    runtime: RoutedRuntime,
    defaults: Defaults,
    *,
    config: CouncilConfig | None = None,
    concurrency: int = 2,
    max_sessions: int = 16,
    **chairman_options: Any,
) -> AsyncIterator[tuple[EmbeddedNats, AgentService, ChairmanService, Client]]:
    """nats-server, agents on ``runtime``, a chairman and a client connection, all ready."""
    server = EmbeddedNats(store, log_file=store / "nats.log").start()
    connections: list[Client] = []
    try:
        for name in ("bench-agents", "bench-chairman", "bench-client"):
            connections.append(await connect(server.url, name=name))
        agents_nc, chairman_nc, client = connections
        await create_stream(chairman_nc)
        async with local_council(
            agents_nc, chairman_nc, runtime, defaults, config,
            concurrency=concurrency, max_sessions=max_sessions, **chairman_options,
        ) as council:  # fmt: skip
            await council.chairman.roster.refresh()  # no measured ask waits for the roster
            yield server, council.agents, council.chairman, client
    finally:
        for nc in connections:
            await nc.close()
        server.stop()


async def throughput(
    run_one: Callable[[], Awaitable[Any]], *, concurrency: int, total: int
) -> float:
    """Sessions per second with ``concurrency`` clients asking back to back."""
    left = total

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await run_one()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def timed(work: Awaitable[Any]) -> float:
    """Wall time of ``work`` in milliseconds."""
    started = time.perf_counter()
    await work
    return (time.perf_counter() - started) * 1000
