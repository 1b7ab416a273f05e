"""The fair share's queue: sessions per second while one person floods, and how long
another person's question waits meanwhile.

A scripted council (each call 50 ms) on a real nats-server; the chairman runs 4
sessions at once and lets one person take all 4, with a queue of 64 each, so a
flood holds every slot: the worst case for anyone else. In one run:

- alone: the light person asks 10 questions one after another on an idle council
  (the baseline);
- flooded: the heavy person asks 60 questions at once, and while they run the light
  person asks the same 10 questions one after another.

Printed: the flood's sessions per second; the light person's median time to the
answer alone and flooded (and their ratio); and the light person's median and
longest wait for a slot, against a session's median time: the fair share promises
the wait is at most one session.

    python -m bench.queue [--quick] [--json] [--save]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from bench.common import Table, machine, median, parser, quiet_logs, report, serving
from council.agents.runtimes.router import RoutedRuntime
from council.agents.runtimes.scripted import ScriptedRuntime
from council.bus.client.ask import follow, submit
from council.bus.events import FinalAnswer, SessionStarted, StageStarted
from council.bus.messages import Question
from council.bus.transport.connection import Credentials, connect
from council.chairman.admission import Defaults

MODELS = ["m1", "m2", "m3"]
DELAY_S = 0.05
SLOTS = 4


async def timed(nc: Client, text: str) -> tuple[float, float]:
    """One question to its answer: (seconds waiting for a slot, seconds in all), both
    on the chairman's clock (from its session_started)."""
    accepted = await submit(nc, Question(question=text))
    events = [e async for e in follow(nc, accepted.session_id, timeout_s=300)]
    started = next(e for e in events if isinstance(e, SessionStarted))
    first_stage = next(e for e in events if isinstance(e, StageStarted))
    final = events[-1]
    assert isinstance(final, FinalAnswer), final
    return first_stage.ts - started.ts, final.ts - started.ts


async def measure(store: Path, flood: int, asks: int) -> dict[str, Any]:
    runtime = ScriptedRuntime(MODELS, delay_s=DELAY_S)
    routed = RoutedRuntime.serving(runtime, MODELS)
    defaults = Defaults(tuple(MODELS), MODELS[0], strategy="synthesize")
    options = {"max_sessions": SLOTS, "person_sessions": SLOTS, "queue": 64}
    async with serving(store, routed, defaults, concurrency=16, **options) as (server, *_):
        heavy = await connect(server.url, name="heavy", credentials=Credentials("heavy", "x"))
        light = await connect(server.url, name="light", credentials=Credentials("light", "x"))
        try:
            alone = [await timed(light, f"alone {i}") for i in range(asks)]
            started = time.perf_counter()
            flooding = [asyncio.create_task(timed(heavy, f"flood {i}")) for i in range(flood)]
            await asyncio.sleep(0.2)  # the flood is in: every slot held, the rest in line
            flooded = [await timed(light, f"flooded {i}") for i in range(asks)]
            heavy_done = await asyncio.gather(*flooding)
            wall_s = time.perf_counter() - started
        finally:
            await heavy.close()
            await light.close()
    session_s = median([total - wait for wait, total in heavy_done])
    return {
        "flood": flood,
        "light_asks": asks,
        "sessions_per_s": round(flood / wall_s, 2),
        "light_alone_s": round(median([t for _, t in alone]), 3),
        "light_flooded_s": round(median([t for _, t in flooded]), 3),
        "light_ratio": round(median([t for _, t in flooded]) / median([t for _, t in alone]), 2),
        "light_wait_median_s": round(median([w for w, _ in flooded]), 3),
        "light_wait_max_s": round(max(w for w, _ in flooded), 3),
        "heavy_wait_max_s": round(max(w for w, _ in heavy_done), 2),
        "session_median_s": round(session_s, 3),
        "slots": SLOTS,
        "call_delay_ms": DELAY_S * 1000,
        **machine(),
    }


def tables(r: dict[str, Any]) -> list[Table]:
    return [
        Table(
            f"A flood and a light person ({r['slots']} slots, all of them one person's to "
            f"take; scripted, {r['call_delay_ms']:g} ms a call)",
            [
                "flood",
                "sessions/s",
                "light alone, s",
                "light flooded, s",
                "ratio",
                "light's wait: median, s",
                "max, s",
                "a session, s",
                "heavy's longest wait, s",
            ],
            [
                [
                    r["flood"],
                    r["sessions_per_s"],
                    r["light_alone_s"],
                    r["light_flooded_s"],
                    r["light_ratio"],
                    r["light_wait_median_s"],
                    r["light_wait_max_s"],
                    r["session_median_s"],
                    r["heavy_wait_max_s"],
                ]
            ],
        )  # fmt: skip
    ]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    quiet_logs()
    flood, asks = (12, 3) if args.quick else (60, 10)
    with tempfile.TemporaryDirectory(prefix="council-queue-") as tmp:
        result = asyncio.run(measure(Path(tmp), flood, asks))
    report(result, tables(result), args)


if __name__ == "__main__":
    main()
