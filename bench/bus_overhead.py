"""What the bus costs a session: the same council over NATS and in-process, side by side.

Both paths run the same ``ScriptedRuntime`` (a fixed per-call delay, no
model), the same conductor and the same handlers; over NATS every LLM call is
a request/reply, every event a JetStream publish (pipelined: acks awaited before
the session's last event), and the client follows the session through an
ordered consumer. The difference per LLM call is the overhead a real model has
to dwarf. The same sessions with each event's ack awaited before the next
(the chairman before pipelining) are the baseline of the pipelining row.

Targets: < 2 ms per call; >= 100 sessions/s for 3-member councils at 0 ms.

    python -m bench.bus_overhead [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    BusCouncil,
    Table,
    bus_council,
    calls_per_session,
    local_session,
    machine,
    median,
    models,
    parser,
    question,
    quiet_logs,
    report,
    throughput,
    timed,
)
from council.agents.runtimes.scripted import ScriptedRuntime

COUNCILS = (3, 5)
DELAYS_MS = (0.0, 50.0)
CONCURRENCY = (1, 10, 100)
TARGET_OVERHEAD_MS = 2.0
TARGET_SESSIONS_S = {1: 200.0, 10: 400.0}
"""Sessions/s over the bus at 3 members, 0 ms, by sessions in flight (issue 14)."""
AGENT_CONCURRENCY = 8
"""Per model in the agent service: above a 5-member council's 4 reviews per model, so the
bus path runs as many calls at once as the in-process one (the shipped 2 would queue)."""


async def overhead(
    council: BusCouncil, local: ScriptedRuntime, n: int, delay_ms: float, repeats: int
) -> dict[str, Any]:
    """Median wall time of one session over the bus and in-process, alternating."""
    council.runtime.delay_s = local.delay_s = delay_ms / 1000
    q = question(n)
    for _ in range(2):  # warm-up: first JetStream writes, first consumers
        await council.session(q)
        await local_session(local, q)
    bus_ms: list[float] = []
    local_ms: list[float] = []
    for i in range(repeats):
        pair = [(bus_ms, council.session(q)), (local_ms, local_session(local, q))]
        for walls, work in pair if i % 2 == 0 else reversed(pair):
            walls.append(await timed(work))
    calls = calls_per_session(n)
    bus, inproc = median(bus_ms), median(local_ms)
    return {
        "members": n,
        "delay_ms": delay_ms,
        "calls": calls,
        "bus_ms": round(bus, 2),
        "inprocess_ms": round(inproc, 2),
        "overhead_ms_per_call": round((bus - inproc) / calls, 3),
        "ratio": round(bus / inproc, 3),
    }


async def pipelining(council: BusCouncil, n: int, repeats: int) -> dict[str, Any]:
    """Median bus session at 0 ms with events pipelined and acked one by one, alternating."""
    council.runtime.delay_s = 0.0
    q = question(n)
    walls: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeats + 2):
        for pipelined in (True, False) if i % 2 == 0 else (False, True):
            council.chairman.events.pipelined = pipelined
            wall = await timed(council.session(q))
            if i >= 2:  # the first rounds warm up
                walls[pipelined].append(wall)
    council.chairman.events.pipelined = True
    piped, acked = median(walls[True]), median(walls[False])
    return {
        "members": n,
        "pipelined_ms": round(piped, 2),
        "acked_ms": round(acked, 2),
        "speedup": round(acked / piped, 3),
    }


async def sessions_per_s(
    council: BusCouncil, local: ScriptedRuntime, concurrency: int, repeats: int, total: int
) -> dict[str, Any]:
    """Throughput of 3-member councils at 0 ms, bus and in-process, median of repeats."""
    council.runtime.delay_s = local.delay_s = 0.0
    q = question(3)
    bus, inproc = [], []
    for _ in range(repeats):
        bus.append(
            await throughput(lambda: council.session(q), concurrency=concurrency, total=total)
        )
        inproc.append(
            await throughput(lambda: local_session(local, q), concurrency=concurrency, total=total)
        )
    return {
        "concurrency": concurrency,
        "sessions": total,
        "bus_sessions_s": round(median(bus), 1),
        "inprocess_sessions_s": round(median(inproc), 1),
    }


async def run(quick: bool) -> dict[str, Any]:
    repeats = {0.0: 4, 50.0: 3} if quick else {0.0: 100, 50.0: 30}
    rounds = 1 if quick else 5
    before = machine()
    local = ScriptedRuntime(models(max(COUNCILS)))
    with tempfile.TemporaryDirectory(prefix="council-bench-") as tmp:
        async with bus_council(
            Path(tmp),
            models(max(COUNCILS)),
            concurrency=AGENT_CONCURRENCY,
            max_sessions=max(CONCURRENCY) + 28,
        ) as council:
            rows = [
                await overhead(council, local, n, delay, repeats[delay])
                for n in COUNCILS
                for delay in DELAYS_MS
            ]
            piping = [await pipelining(council, n, repeats[0.0]) for n in COUNCILS]
            rates = [
                await sessions_per_s(
                    council, local, c, rounds, (c * 2 if quick else max(100, c * 3))
                )
                for c in CONCURRENCY
            ]
    worst = max(r["overhead_ms_per_call"] for r in rows)
    rate_at = {r["concurrency"]: r["bus_sessions_s"] for r in rates}
    return {
        "benchmark": "bus_overhead",
        "quick": quick,
        "repeats": {f"{k:g}ms": v for k, v in repeats.items()},
        "throughput_rounds": rounds,
        "overhead": rows,
        "pipelining": piping,
        "throughput": rates,
        "targets": {
            "overhead_ms_per_call": {
                "target": f"< {TARGET_OVERHEAD_MS}",
                "worst": worst,
                "met": worst < TARGET_OVERHEAD_MS,
            },
            **{
                f"sessions_s_{c}_at_once": {
                    "target": f">= {target:g}",
                    "measured": rate_at[c],
                    "met": rate_at[c] >= target,
                }
                for c, target in TARGET_SESSIONS_S.items()
            },
        },  # fmt: skip
        "machine_before": before,
        "machine_after": machine(),
    }


def tables(result: dict[str, Any]) -> list[Table]:
    over = Table(
        "Per-session wall time, median (ms)",
        ["members", "delay ms", "calls", "bus", "in-process", "overhead/call", "ratio"],
        [
            [r["members"], r["delay_ms"], r["calls"], r["bus_ms"], r["inprocess_ms"],
             r["overhead_ms_per_call"], r["ratio"]]
            for r in result["overhead"]
        ],
    )  # fmt: skip
    piping = Table(
        "Session events pipelined against acked one by one, 0 ms (median ms)",
        ["members", "pipelined", "acked one by one", "speed-up"],
        [
            [r["members"], r["pipelined_ms"], r["acked_ms"], r["speedup"]]
            for r in result["pipelining"]
        ],
    )
    rate = Table(
        "Sessions per second, 3 members, 0 ms (median)",
        ["concurrent", "sessions", "bus", "in-process"],
        [
            [r["concurrency"], r["sessions"], r["bus_sessions_s"], r["inprocess_sessions_s"]]
            for r in result["throughput"]
        ],
    )
    targets = Table(
        "Targets",
        ["target", "measured", "met"],
        [
            ["overhead < 2 ms/call", result["targets"]["overhead_ms_per_call"]["worst"],
             result["targets"]["overhead_ms_per_call"]["met"]],
            *[[f"{target['target']} sessions/s, {c} at once", target["measured"], target["met"]]
              for c in TARGET_SESSIONS_S
              if (target := result["targets"].get(f"sessions_s_{c}_at_once"))],
        ],
    )  # fmt: skip
    return [over, piping, rate, targets]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    quiet_logs()
    result = asyncio.run(run(args.quick))
    report(result, tables(result), args)


if __name__ == "__main__":
    main()
