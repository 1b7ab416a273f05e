"""Two council processes on one host: dividing the cores, or competing for them.

Two embedded runtimes (as two agent processes would hold them, each allowed every
core, batched as ``COUNCIL_BATCH`` says), each generating one call at a time, both
at once, two ways: dividing the cores among those generating
(``agents/runtimes/cores.py``, how council runs) and competing (each assumes it
owns the host, how council ran before). The figure is the aggregate completion
rate, median of ``--repeats``, the arms interleaved; the ratio is dividing over
competing.

    python -m bench.host_cores [--model qwen2.5-coder-0.5b] [--calls 3] [--quick]
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
from council.assembly.settings import Settings
from council.bus.messages import ChatMessage, GenerationOptions


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


def arms(
    models_dir: Path, shared: Path, cores: int, batch: int
) -> dict[str, list[EmbeddedRuntime]]:
    def pair(cores_dir: Path | None) -> list[EmbeddedRuntime]:
        return [
            EmbeddedRuntime(
                models_dir, auto_pull=False, threads=cores, batch=batch, cores_dir=cores_dir
            )
            for _ in "ab"
        ]

    return {
        "dividing": pair(shared),
        "competing": pair(None),
    }


async def measure(model: str, count: int, tokens: int, repeats: int, batch: int) -> dict[str, Any]:
    models_dir = Settings().runtime.models_path
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="council-cores-") as tmp:
        pairs = arms(models_dir, Path(tmp), cores, batch)
        rates: dict[str, list[float]] = {arm: [] for arm in pairs}
        try:
            for pair in pairs.values():
                for runtime in pair:
                    await runtime.load(model)
                await rate(pair, model, 1, 8)  # warm
            for i in range(repeats):
                order = list(pairs)[i % len(pairs) :] + list(pairs)[: i % len(pairs)]
                for arm in order:
                    rates[arm].append(await rate(pairs[arm], model, count, tokens))
        finally:
            for pair in pairs.values():
                for runtime in pair:
                    await runtime.close()
    figures = {arm: median(values) for arm, values in rates.items()}
    return {
        "benchmark": "host_cores",
        "model": model,
        "calls_per_runtime": count,
        "tokens_per_call": tokens,
        "threads": cores,
        "batch": batch,
        "repeats": repeats,
        **{f"{arm}_tok_s": round(value, 1) for arm, value in figures.items()},
        "ratio": round(figures["dividing"] / figures["competing"], 2),
        **machine(),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b")
    p.add_argument("--calls", type=int, default=3, help="calls each runtime makes in turn")
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=Settings().runtime.batch, help="COUNCIL_BATCH")
    args = p.parse_args()
    quiet_logs()
    model = "smollm2-135m" if args.quick else args.model
    tokens, repeats = (24, 1) if args.quick else (args.tokens, args.repeats)
    result = asyncio.run(measure(model, args.calls, tokens, repeats, args.batch))
    table = Table(
        f"{model}: two runtimes allowed {result['threads']} threads each on one host, "
        f"aggregate completion tokens/s, median of {repeats}",
        ["dividing the cores", "competing", "dividing / competing"],
        [[result["dividing_tok_s"], result["competing_tok_s"], result["ratio"]]],
    )
    report(result, [table], args)


if __name__ == "__main__":
    main()
