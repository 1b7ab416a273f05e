"""How a session's cost grows with its members: pairwise N×(N−1) reviews against rank's N.

Councils of 2 to 8 scripted members over NATS, at 0 ms per call (what the
orchestration itself costs) and at a fixed delay per call (a stand-in for a
model). The agent service keeps the shipped bound of 2 calls in flight per
model, so a reviewer's N−1 pairwise calls queue behind each other the way they
would on a real host, and the growth shows in wall time too.

    python -m bench.scaling [--quick] [--json] [--delay-ms 20]
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
    machine,
    median,
    models,
    parser,
    question,
    quiet_logs,
    report,
    timed,
)
from council.bus.events import FinalAnswer
from council.bus.messages import ReviewMode

SIZES = range(2, 9)
MODES: tuple[ReviewMode, ...] = ("pairwise", "rank")
SIDES = ("calls", "tokens", "wall ms")
"""What the table gives of each mode."""


async def measure(
    council: BusCouncil, n: int, mode: ReviewMode, delay_ms: float, repeats: int
) -> dict[str, Any]:
    """Median wall time of ``repeats`` sessions, with the calls and tokens of the last."""
    council.runtime.delay_s = delay_ms / 1000
    q = question(n, mode)
    await council.session(q)  # warm-up
    walls: list[float] = []
    finals: list[FinalAnswer] = []

    async def one() -> None:
        finals.append(await council.session(q))

    for _ in range(repeats):
        council.runtime.history.clear()
        walls.append(await timed(one()))
    calls = len(council.runtime.history)
    usage = finals[-1].usage["total"]
    assert calls == calls_per_session(n, mode), (calls, n, mode)
    return {
        "members": n,
        "mode": mode,
        "delay_ms": delay_ms,
        "calls": calls,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "wall_ms": round(median(walls), 1),
    }


async def run(quick: bool, delay_ms: float) -> dict[str, Any]:
    repeats = 1 if quick else 11
    sizes = (2, 5, 8) if quick else SIZES
    before = machine()
    with tempfile.TemporaryDirectory(prefix="council-bench-") as tmp:
        async with bus_council(Path(tmp), models(max(SIZES))) as council:
            rows = [
                await measure(council, n, mode, delay, repeats)
                for delay in (0.0, delay_ms)
                for mode in MODES
                for n in sizes
            ]
    return {
        "benchmark": "scaling",
        "quick": quick,
        "repeats": repeats,
        "agent_concurrency_per_model": 2,
        "rows": rows,
        "machine_before": before,
        "machine_after": machine(),
    }


def tables(result: dict[str, Any]) -> list[Table]:
    """One table per delay, pairwise and rank side by side per council size."""
    out = []
    for delay in sorted({r["delay_ms"] for r in result["rows"]}):
        by = {(r["members"], r["mode"]): r for r in result["rows"] if r["delay_ms"] == delay}
        sizes = sorted({n for n, _ in by})
        t = Table(
            f"Per session at {delay:g} ms per call (wall = median)",
            ["members", *(f"{mode} {what}" for mode in MODES for what in SIDES)],
        )
        for n in sizes:
            row: list[Any] = [n]
            for mode in MODES:
                r = by[(n, mode)]
                tokens = r["prompt_tokens"] + r["completion_tokens"]
                row += [r["calls"], tokens, r["wall_ms"]]
            t.rows.append(row)
        out.append(t)
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--delay-ms", type=float, default=20.0, help="per-call delay of the 2nd run")
    args = p.parse_args()
    quiet_logs()
    result = asyncio.run(run(args.quick, args.delay_ms))
    report(result, tables(result), args)


if __name__ == "__main__":
    main()
