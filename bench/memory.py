"""Whether the chairman or the agents grow with the sessions they have run.

The chairman and the agents run as the real ``council`` processes
(scripted runtime, members m1,m2,m3) on an embedded nats-server; this process
asks 1,000 sessions, a few at a time, and samples each process's RSS every
100 sessions. A leak shows as a slope after the warm-up (allocator arenas,
imports and caches fill during the first sessions); the slope is reported in
MB per 1,000 sessions.

    python -m bench.memory [--quick] [--json] [--sessions 1000]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from nats.aio.client import Client

from bench.common import (
    Table,
    bus_session,
    create_stream,
    machine,
    parser,
    question,
    quiet_logs,
    report,
    slope,
)
from council.bus.errors import NoCouncil, QuestionRejected
from council.bus.transport.connection import connect
from council.bus.transport.server import EmbeddedNats

CONCURRENT = 8
"""Sessions in flight at once: below the chairman's default limit of 16."""


def start_roles(url: str, logs: Path) -> dict[str, subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "COUNCIL_MEMBERS": "m1,m2,m3",
        "COUNCIL_CHAIRMAN": "m1",
        "COUNCIL_LOG_FORMAT": "json",
    }
    common = ["--runtime", "scripted", "--nats", url]
    commands = {
        "chairman": ["chairman", "--no-local-agent", *common],
        "agents": ["agents", "--models", "m1,m2,m3", *common],
    }
    return {
        role: subprocess.Popen(
            [sys.executable, "-m", "council.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(logs / f"{role}.log").open("wb"),
        )
        for role, args in commands.items()
    }


async def wait_ready(nc: Client, timeout_s: float = 60.0) -> None:
    """Ask until the chairman answers and knows the agents' models."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await bus_session(nc, question(3), timeout_s=30)
            return
        except (NoCouncil, QuestionRejected):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


async def run(sessions: int, every: int, warmup: int) -> dict[str, Any]:
    before = machine()
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="council-bench-") as tmp_name:
        tmp = Path(tmp_name)
        server = EmbeddedNats(tmp / "store", log_file=tmp / "nats.log").start()
        nc = await connect(server.url, name="bench-memory")
        await create_stream(nc)
        roles = start_roles(server.url, tmp)
        pids = {role: p.pid for role, p in roles.items()}
        assert server.process is not None
        pids["nats-server"] = server.process.pid
        try:
            await wait_ready(nc)
            started = time.perf_counter()
            done = 0
            q = question(3)

            async def client(count: int) -> None:
                for _ in range(count):
                    await bus_session(nc, q)

            while True:
                samples.append({"sessions": done, **{r: rss_mb(pid) for r, pid in pids.items()}})
                if done >= sessions:
                    break
                share, extra = divmod(every, CONCURRENT)
                await asyncio.gather(*(client(share + (i < extra)) for i in range(CONCURRENT)))
                done += every
            elapsed = time.perf_counter() - started
        finally:
            await nc.close()
            for p in roles.values():
                p.terminate()
            for p in roles.values():
                p.wait(30)
            server.stop()
    after_warmup = [s for s in samples if s["sessions"] >= warmup]
    xs = [s["sessions"] for s in after_warmup]
    return {
        "benchmark": "memory",
        "sessions": sessions,
        "sample_every": every,
        "warmup_sessions": warmup,
        "concurrent": CONCURRENT,
        "sessions_per_s": round(sessions / elapsed, 1),
        "samples_mb": [{k: round(v, 1) for k, v in s.items()} for s in samples],
        "slope_mb_per_1000_sessions": {
            role: round(slope(xs, [s[role] for s in after_warmup]) * 1000, 2) for role in pids
        },
        "machine_before": before,
        "machine_after": machine(),
    }


def tables(result: dict[str, Any]) -> list[Table]:
    roles = list(result["slope_mb_per_1000_sessions"])
    rss = Table(
        "RSS (MB) after N sessions",
        ["sessions", *roles],
        [[s["sessions"], *(s[r] for r in roles)] for s in result["samples_mb"]],
    )
    trend = Table(
        f"Slope after {result['warmup_sessions']} warm-up sessions (MB per 1,000 sessions)",
        roles,
        [[result["slope_mb_per_1000_sessions"][r] for r in roles]],
    )
    return [rss, trend]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=1000, help="sessions to run")
    args = p.parse_args()
    quiet_logs()
    sessions, every, warmup = (60, 20, 20) if args.quick else (args.sessions, 100, 200)
    result = asyncio.run(run(sessions, every, warmup))
    result["quick"] = args.quick
    report(result, tables(result), args)


if __name__ == "__main__":
    main()
