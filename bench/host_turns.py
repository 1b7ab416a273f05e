"""Two council processes on one host: taking turns on the cores against competing.

Two embedded runtimes (as two agent processes would hold them, each with every
core), each generating one call at a time, both at once: once sharing a turns
file (``agents/runtimes/turns.py``, how council runs) and once not (each assumes
it owns the host). The figure is the aggregate completion rate, median of
``--repeats``, alternating the two arms; the ratio is turns over competing.

    python -m bench.host_turns [--model qwen2.5-coder-0.5b] [--calls 3] [--quick]
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Table, machine, median, parser, quiet_logs, report
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.bus.messages import ChatMessage, GenerationOptions
from council.cli.settings import Settings


async def calls(runtime: EmbeddedRuntime, model: str, count: int, tokens: int) -> int:
    done = 0
    for i in range(count):
        options = GenerationOptions(temperature=0.7, seed=i, max_tokens=tokens)
        messages = [ChatMessage("user", f"Describe a city, number {i}, in detail.")]
        async for chunk in runtime.chat(model, messages, options=options):
            done += chunk.usage.completion_tokens if chunk.usage else 0
    return done


async def rate(pair: list[EmbeddedRuntime], model: str, count: int, tokens: int) -> float:
    started = time.perf_counter()
    done = await asyncio.gather(*(calls(r, model, count, tokens) for r in pair))
    return sum(done) / (time.perf_counter() - started)


async def measure(model: str, count: int, tokens: int, repeats: int) -> dict[str, Any]:
    models_dir = Settings().models_path
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="council-turns-") as tmp:
        shared = Path(tmp) / "turns.lock"
        arms = {
            "turns": [
                EmbeddedRuntime(models_dir, auto_pull=False, threads=cores, turns_file=shared)
                for _ in range(2)
            ],
            "competing": [
                EmbeddedRuntime(models_dir, auto_pull=False, threads=cores) for _ in range(2)
            ],
        }
        rates: dict[str, list[float]] = {arm: [] for arm in arms}
        try:
            for pair in arms.values():
                for runtime in pair:
                    await runtime.load(model)
                await rate(pair, model, 1, 8)  # warm
            for i in range(repeats):
                order = list(arms) if i % 2 == 0 else list(reversed(arms))
                for arm in order:
                    rates[arm].append(await rate(arms[arm], model, count, tokens))
        finally:
            for pair in arms.values():
                for runtime in pair:
                    await runtime.close()
    turns, competing = median(rates["turns"]), median(rates["competing"])
    return {
        "benchmark": "host_turns",
        "model": model,
        "calls_per_runtime": count,
        "tokens_per_call": tokens,
        "threads": cores,
        "repeats": repeats,
        "turns_tok_s": round(turns, 1),
        "competing_tok_s": round(competing, 1),
        "ratio": round(turns / competing, 2),
        **machine(),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b")
    p.add_argument("--calls", type=int, default=3, help="calls each runtime makes in turn")
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    quiet_logs()
    model = "smollm2-135m" if args.quick else args.model
    tokens, repeats = (24, 1) if args.quick else (args.tokens, args.repeats)
    result = asyncio.run(measure(model, args.calls, tokens, repeats))
    table = Table(
        f"{model}: two runtimes of {result['threads']} threads on one host, "
        f"aggregate completion tokens/s, median of {repeats}",
        ["taking turns", "competing", "turns / competing"],
        [[result["turns_tok_s"], result["competing_tok_s"], result["ratio"]]],
    )
    report(result, [table], args)


if __name__ == "__main__":
    main()
