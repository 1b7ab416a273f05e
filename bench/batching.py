"""Concurrent calls to one model: decoded together (``COUNCIL_BATCH``) against one at a time.

The same prompts, seeds and token counts go to the embedded runtime twice in
one run: as it runs by default (calls to a model wait for each other) and with
``batch`` sequences decoded together. Each figure is the aggregate completion
rate (every call's tokens over the wall time until the last one ends),
median of ``--repeats``; the ratio is batched over one-at-a-time.

Shared prefixes: the same calls as a session's samples make them (one long
prompt, several seeds, a short answer, so prompt evaluation dominates) against
calls whose prompts differ from their first word (so none can share), in the
batched runtime: wall time, and prompt tokens sent against evaluated.

    python -m bench.batching [--model qwen2.5-coder-1.5b] [--calls 1,3,6] [--quick]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import Table, machine, median, parser, quiet_logs, report
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.assembly.settings import Settings
from council.bus.messages import ChatMessage, GenerationOptions

TOPICS = ("the sea", "a mountain", "a city at night", "a forest", "a desert", "a river")


async def aggregate_rate(runtime: EmbeddedRuntime, model: str, calls: int, tokens: int) -> float:
    async def one(i: int) -> int:
        messages = [
            ChatMessage("system", "You are helpful."),
            ChatMessage("user", f"Describe {TOPICS[i % len(TOPICS)]} in detail."),
        ]
        options = GenerationOptions(temperature=0.7, seed=i, max_tokens=tokens)
        used = 0
        async for chunk in runtime.chat(model, messages, options=options):
            used = chunk.usage.completion_tokens if chunk.usage else used
        return used

    started = time.perf_counter()
    done = await asyncio.gather(*(one(i) for i in range(calls)))
    return sum(done) / (time.perf_counter() - started)


LONG_SYSTEM = (
    "You are a member of a council of AI models. Work the user's question out step by "
    "step, briefly, then end with one last line that starts with 'Final answer: '. "
) * 6
QUESTION = (
    "A baker sells loaves for $3 and rolls for $0.50. On Monday she sold 40 loaves and "
    "three times as many rolls; on Tuesday half as many loaves and twice as many rolls as "
    "on Monday. How much did she take in over the two days?"
)


async def prefix_run(
    runtime: EmbeddedRuntime, model: str, calls: int, shared: bool
) -> tuple[float, int, int]:
    """(wall s, prompt tokens sent, prompt tokens evaluated) for ``calls`` samples."""

    async def one(i: int) -> tuple[int, int]:
        lead = "" if shared else f"Call {i}. "
        messages = [ChatMessage("system", lead + LONG_SYSTEM), ChatMessage("user", QUESTION)]
        options = GenerationOptions(temperature=0.7, seed=i, max_tokens=16)
        sent = reused = 0
        async for chunk in runtime.chat(model, messages, options=options):
            if chunk.usage:
                sent, reused = chunk.usage.prompt_tokens, chunk.usage.prompt_reused
        return sent, sent - reused

    started = time.perf_counter()
    done = await asyncio.gather(*(one(i) for i in range(calls)))
    wall = time.perf_counter() - started
    return wall, sum(s for s, _ in done), sum(e for _, e in done)


async def prefix_rows(
    runtime: EmbeddedRuntime, model: str, counts: list[int], repeats: int
) -> list[dict[str, Any]]:
    rows = []
    for calls in (c for c in counts if c > 1):
        walls: dict[bool, list[float]] = {True: [], False: []}
        tokens: dict[bool, tuple[int, int]] = {}
        for _ in range(repeats):
            for shared in (True, False):
                wall, sent, evaluated = await prefix_run(runtime, model, calls, shared)
                walls[shared].append(wall)
                tokens[shared] = (sent, evaluated)
        rows.append(
            {
                "calls": calls,
                "shared_s": round(median(walls[True]), 2),
                "distinct_s": round(median(walls[False]), 2),
                "speedup": round(median(walls[False]) / median(walls[True]), 2),
                "prompt_sent": tokens[True][0],
                "prompt_evaluated": tokens[True][1],
                "distinct_evaluated": tokens[False][1],
            }
        )
    return rows


async def measure(model: str, counts: list[int], tokens: int, repeats: int) -> dict[str, Any]:
    models_dir = Settings().runtime.models_path
    rows: list[dict[str, Any]] = []
    serial = EmbeddedRuntime(models_dir, auto_pull=False)
    batched = EmbeddedRuntime(models_dir, auto_pull=False, batch=max(counts))
    try:
        for runtime in (serial, batched):
            await runtime.load(model)
            await aggregate_rate(runtime, model, 1, 8)  # warm
        for calls in counts:
            one_at_a_time, together = [], []
            for _ in range(repeats):  # interleaved, so both see the same machine
                one_at_a_time.append(await aggregate_rate(serial, model, calls, tokens))
                together.append(await aggregate_rate(batched, model, calls, tokens))
            rows.append(
                {
                    "calls": calls,
                    "one_at_a_time_tok_s": round(median(one_at_a_time), 1),
                    "batched_tok_s": round(median(together), 1),
                }
            )
        prefixes = await prefix_rows(batched, model, counts, repeats)
    finally:
        await serial.close()
        await batched.close()
    single = rows[0]["batched_tok_s"] if rows and rows[0]["calls"] == 1 else None
    for row in rows:
        row["ratio"] = round(row["batched_tok_s"] / row["one_at_a_time_tok_s"], 2)
        if single:
            row["batched_vs_one_call"] = round(row["batched_tok_s"] / single, 2)
    return {
        "model": model,
        "tokens_per_call": tokens,
        "repeats": repeats,
        "threads": serial.threads,
        "rows": rows,
        "prefixes": prefixes,
        **machine(),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-coder-1.5b")
    p.add_argument("--calls", default="1,3,6", help="concurrent calls, comma-separated")
    p.add_argument("--tokens", type=int, default=150, help="completion tokens per call")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    quiet_logs()
    counts = [int(c) for c in args.calls.split(",")]
    tokens, repeats = (24, 1) if args.quick else (args.tokens, args.repeats)
    model = "smollm2-135m" if args.quick else args.model
    result = asyncio.run(measure(model, counts, tokens, repeats))
    table = Table(
        f"{result['model']}: aggregate completion tokens/s, {tokens} tokens a call, "
        f"{result['threads']} threads, median of {repeats}",
        ["calls", "one at a time", "batched", "batched / one at a time", "batched / 1 call"],
    )
    for row in result["rows"]:
        table.rows.append(
            [
                row["calls"],
                row["one_at_a_time_tok_s"],
                row["batched_tok_s"],
                row["ratio"],
                row.get("batched_vs_one_call", "-"),
            ]
        )
    shared = Table(
        f"{result['model']}: {len(LONG_SYSTEM) // 4}-odd-token prompts, 16 tokens a call, "
        f"batched, median of {repeats}",
        ["calls", "shared prefix s", "distinct prefixes s", "speed-up", "prompt sent",
         "evaluated (shared)", "evaluated (distinct)"],
        [
            [r["calls"], r["shared_s"], r["distinct_s"], r["speedup"], r["prompt_sent"],
             r["prompt_evaluated"], r["distinct_evaluated"]]
            for r in result["prefixes"]
        ],
    )  # fmt: skip
    report(result, [table, shared], args)


if __name__ == "__main__":
    main()
