"""Real models: a council of GGUF models over NATS and in-process, stage by stage.

One ``EmbeddedRuntime`` (llama-cpp-python) loads the models once; the same
sessions (same seed, same prompts, same temperatures) run over the bus
(nats-server, ``AgentService``, ``ChairmanService``, asked through
``council.bus.client.ask``) and in-process (``Conductor`` over the handlers),
alternating A/B. A plain single-stream generation per model gives that
model's best tokens/s, against which stage 2 (the N×(N−1) reviews) is judged.
Optionally the same in-process sessions run on a second runtime with one
thread per generation and two slots, and (``--batch N``) on a batched runtime
(``COUNCIL_BATCH=N``), alternating with the one-call-at-a-time runtime: the
whole session's speed-up from batching, stage by stage.

Targets: bus/in-process wall <= 1.05 per stage and total; stage-2 review
tokens/s >= 80% of the token-weighted best rate of the reviewing models.

    python -m bench.real_models [--quick] [--json] [--members ...] [--repeats N]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    Table,
    _discard,
    _finished,
    bus_session,
    machine,
    median,
    parser,
    quiet_logs,
    report,
    serving,
)
from council.agents.runtimes.base import Capacity, ChatCall, ChatChunk, Runtime
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.agents.runtimes.router import RoutedRuntime
from council.assembly.wiring import LocalAgents
from council.bus.events import FinalAnswer
from council.bus.members import model_of
from council.bus.messages import ChatMessage, GenerationOptions, ModelStatus, Question, Usage
from council.chairman.admission import Defaults, admit
from council.chairman.conductor import Conductor
from council.chairman.config import CouncilConfig
from council.chairman.core import Plan

MODELS_DIR = Path("~/.cache/council/models").expanduser()
MEMBERS = list(Defaults().members)
CHAIRMAN = Defaults().chairman
QUICK_MEMBERS = ["smollm2-135m@careful", "smollm2-135m@concise", "smollm2-135m@skeptic"]
QUICK_CHAIRMAN = "smollm2-135m"
CONFIG = CouncilConfig(
    opinion_max_tokens=96, review_max_tokens=64, synthesis_max_tokens=128, conclude=False
)
STRATEGY = "synthesize"
"""Every stage runs: the bus's cost is measured over the whole session."""
SEED = 1234
QUESTION = "What is the capital of Australia, and why is it not Sydney?"
STAGES = ("opinions", "reviews", "synthesis", "total")
TARGET_RATIO = 1.05
TARGET_REVIEW_SHARE = 0.80
TARGET_BATCHED_SPEEDUP = 1.5
"""A whole session batched against one call at a time (issue 14)."""
TARGET_SHARE_OF_ENGINE = 0.80
"""Stage 2 in a batched session against the same calls on the batched engine alone."""
BEST_PROMPT = "Write a long story about a lighthouse keeper. Keep going."


@dataclass
class Council:
    members: list[str]
    chairman: str

    @property
    def models(self) -> list[str]:
        return sorted({model_of(m) for m in self.members} | {self.chairman})

    def question(self) -> Question:
        return Question(question=QUESTION, members=self.members, chairman=self.chairman, seed=SEED)


async def local_session(runtime: RoutedRuntime, council: Council) -> FinalAnswer:
    plan = admit(
        council.question(),
        Defaults(tuple(council.members), council.chairman, strategy=STRATEGY),
        quorum=CONFIG.quorum,
        opinion_models=set(runtime.routes),
        synthesis_models=set(runtime.routes),
    )
    assert isinstance(plan, Plan), plan
    agents = LocalAgents(runtime)
    return _finished(await Conductor(plan, CONFIG, agents, _discard).run())


def stage_figures(final: FinalAnswer, wall_ms: float) -> dict[str, Any]:
    """Wall per stage (ms), completion tokens per stage, review tokens per model."""
    review_tokens: dict[str, int] = {}
    for r in final.reviews:
        review_tokens[r.model] = review_tokens.get(r.model, 0) + r.usage.completion_tokens
    return {
        "client_ms": wall_ms,
        "ms": {s: final.latency_ms.get(s, 0.0) for s in STAGES},
        "tokens": {s: final.usage.get(s, Usage()).completion_tokens for s in STAGES},
        "prompt_tokens": {s: final.usage.get(s, Usage()).prompt_tokens for s in STAGES},
        "review_tokens": review_tokens,
        "failed": len(final.failed),
    }


async def timed_session(work: Any) -> dict[str, Any]:
    started = time.perf_counter()
    final = await work
    return stage_figures(final, (time.perf_counter() - started) * 1000)


async def best_rate(runtime: EmbeddedRuntime, model: str, max_tokens: int) -> dict[str, Any]:
    """One plain single-stream generation, no schema: the model's best tokens/s."""
    options = GenerationOptions(temperature=0.7, seed=SEED, max_tokens=max_tokens)
    messages = [ChatMessage("user", BEST_PROMPT)]
    rates = []
    tokens = 0
    for _ in range(3):
        started = time.perf_counter()
        async for chunk in runtime.chat(model, messages, options=options):
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        rates.append(tokens / (time.perf_counter() - started))
    return {"model": model, "tokens": tokens, "tokens_s": round(median(rates), 1)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ms": {s: round(median([r["ms"][s] for r in runs]), 1) for s in STAGES},
        "client_ms": round(median([r["client_ms"] for r in runs]), 1),
        "tokens": {s: median([r["tokens"][s] for r in runs]) for s in STAGES},
        "prompt_tokens": {s: median([r["prompt_tokens"][s] for r in runs]) for s in STAGES},
        "tokens_s": {
            s: round(median([r["tokens"][s] / r["ms"][s] * 1000 for r in runs]), 1) for s in STAGES
        },
        "failed": sum(r["failed"] for r in runs),
    }


def review_share(runs: list[dict[str, Any]], best: dict[str, float]) -> float:
    """Stage-2 time at each model's best rate ÷ measured stage-2 wall, median of runs."""
    shares = []
    for r in runs:
        ideal_s = sum(t / best[m] for m, t in r["review_tokens"].items())
        shares.append(ideal_s * 1000 / r["ms"]["reviews"])
    return round(median(shares), 3)


class ReviewRecorder:
    """A runtime passing every call on, keeping the reviews (the calls with a JSON
    schema) so that they can be sent again to the engine alone."""

    name = "review-recorder"

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.reviews: list[ChatCall] = []

    def statuses(self) -> list[ModelStatus]:
        return self.inner.statuses()

    def capacity(self) -> Capacity:
        return self.inner.capacity()

    async def load(self, model: str) -> None:
        await self.inner.load(model)

    def chat(
        self,
        model: str,
        messages: list[ChatMessage],
        *,
        options: GenerationOptions,
        schema: dict[str, Any] | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        if schema is not None:
            self.reviews.append(ChatCall(model, list(messages), options, schema))
        return self.inner.chat(model, messages, options=options, schema=schema)

    async def close(self) -> None:
        await self.inner.close()


async def engine_alone(runtime: Runtime, calls: list[ChatCall]) -> dict[str, float]:
    """The same calls, all at once, straight to the engine: no council, no handlers."""
    used: list[Usage] = []

    async def one(call: ChatCall) -> None:
        async for chunk in runtime.chat(
            call.model, call.messages, options=call.options, schema=call.schema
        ):
            if chunk.usage:
                used.append(chunk.usage)

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in calls))
    ms = (time.perf_counter() - started) * 1000
    return {"ms": ms, "tokens": sum(u.prompt_tokens + u.completion_tokens for u in used)}


def stage2_share(run: dict[str, Any], alone: dict[str, float]) -> float:
    """Stage 2's rate in the session over the same calls' rate on the engine alone,
    prompt and completion tokens both counted."""
    tokens = run["prompt_tokens"]["reviews"] + run["tokens"]["reviews"]
    return (tokens / run["ms"]["reviews"]) / (alone["tokens"] / alone["ms"])


async def batched_arm(
    council: Council, serial: RoutedRuntime, batch: int, repeats: int
) -> dict[str, Any]:
    """In-process sessions on a batched runtime against the serial one, alternating;
    each batched session's reviews are then sent again to the batched engine alone."""
    batched = EmbeddedRuntime(MODELS_DIR, auto_pull=False, batch=batch)
    recorder = ReviewRecorder(batched)
    routed = RoutedRuntime.serving(recorder, council.models)
    for m in council.models:
        await batched.load(m)
    await local_session(routed, council)  # warm-up
    serial_runs: list[dict[str, Any]] = []
    batched_runs: list[dict[str, Any]] = []
    shares: list[float] = []
    for i in range(repeats):
        pair = [(serial_runs, serial), (batched_runs, routed)]
        for runs, runtime in pair if i % 2 == 0 else reversed(pair):
            recorder.reviews.clear()
            runs.append(await timed_session(local_session(runtime, council)))
            if runtime is routed:
                alone = await engine_alone(batched, recorder.reviews)
                shares.append(stage2_share(runs[-1], alone))
    await batched.close()
    one, many = summarise(serial_runs), summarise(batched_runs)
    return {
        "batch": batch,
        "serial": one,
        "batched": many,
        "speedup": {s: round(one["ms"][s] / many["ms"][s], 3) for s in STAGES},
        "reviews_share_of_engine_alone": round(median(shares), 3),
    }


async def run(council: Council, repeats: int, try_threads: bool, batch: int = 0) -> dict[str, Any]:
    before = machine()
    embedded = EmbeddedRuntime(MODELS_DIR, auto_pull=False)
    routed = RoutedRuntime(dict.fromkeys(council.models, embedded))
    for m in council.models:
        await embedded.load(m)
    best = {
        b["model"]: b
        for b in [await best_rate(embedded, m, CONFIG.review_max_tokens) for m in council.models]
    }
    bus_runs: list[dict[str, Any]] = []
    local_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="council-bench-") as tmp:
        defaults = Defaults(tuple(council.members), council.chairman, strategy=STRATEGY)
        async with serving(Path(tmp), routed, defaults, config=CONFIG) as (*_, client):
            await bus_session(client, council.question(), timeout_s=600)  # warm-up
            for i in range(repeats):
                pair = [
                    (bus_runs, lambda: bus_session(client, council.question(), timeout_s=600)),
                    (local_runs, lambda: local_session(routed, council)),
                ]
                for runs, work in pair if i % 2 == 0 else reversed(pair):
                    runs.append(await timed_session(work()))
    batching = await batched_arm(council, routed, batch, repeats) if batch else None
    await embedded.close()
    best_rates = {m: b["tokens_s"] for m, b in best.items()}
    bus, local = summarise(bus_runs), summarise(local_runs)
    ratios = {s: round(bus["ms"][s] / local["ms"][s], 3) for s in STAGES}
    share = {
        "bus": review_share(bus_runs, best_rates),
        "inprocess": review_share(local_runs, best_rates),
    }
    result: dict[str, Any] = {
        "benchmark": "real_models",
        "members": council.members,
        "chairman": council.chairman,
        "max_tokens": {
            "opinions": CONFIG.opinion_max_tokens,
            "reviews": CONFIG.review_max_tokens,
            "synthesis": CONFIG.synthesis_max_tokens,
        },
        "seed": SEED,
        "repeats": repeats,
        "threads": embedded.threads,
        "slots": embedded.slots,
        "best": list(best.values()),
        "bus": bus,
        "inprocess": local,
        "ratio": ratios,
        "review_share_of_best": share,
        "targets": {
            "bus_ratio": {
                "target": f"<= {TARGET_RATIO}",
                "worst": max(ratios.values()),
                "met": max(ratios.values()) <= TARGET_RATIO,
            },
            "review_share": {
                "target": f">= {TARGET_REVIEW_SHARE}",
                "measured": share["bus"],
                "met": share["bus"] >= TARGET_REVIEW_SHARE,
            },
        },
    }
    if try_threads:
        one = EmbeddedRuntime(MODELS_DIR, threads=1, auto_pull=False)
        routed_one = RoutedRuntime(dict.fromkeys(council.models, one))
        for m in council.models:
            await one.load(m)
        await local_session(routed_one, council)  # warm-up
        runs = [await timed_session(local_session(routed_one, council)) for _ in range(repeats)]
        await one.close()
        alt = summarise(runs)
        result["threads1_slots2_inprocess"] = {
            **alt,
            "review_share_of_best": review_share(runs, best_rates),
            "reviews_ms_vs_threads2": round(alt["ms"]["reviews"] / local["ms"]["reviews"], 3),
            "total_ms_vs_threads2": round(alt["ms"]["total"] / local["ms"]["total"], 3),
        }
    if batching:
        result["batching"] = batching
        result["targets"]["batched_speedup"] = {
            "target": f">= {TARGET_BATCHED_SPEEDUP}",
            "measured": batching["speedup"]["total"],
            "met": batching["speedup"]["total"] >= TARGET_BATCHED_SPEEDUP,
        }
        share_of_engine = batching["reviews_share_of_engine_alone"]
        result["targets"]["reviews_share_of_engine"] = {
            "target": f">= {TARGET_SHARE_OF_ENGINE}",
            "measured": share_of_engine,
            "met": share_of_engine >= TARGET_SHARE_OF_ENGINE,
        }
    result["machine_before"] = before
    result["machine_after"] = machine()
    return result


def tables(result: dict[str, Any]) -> list[Table]:
    bus, local = result["bus"], result["inprocess"]
    stages = Table(
        f"Per stage, median of {result['repeats']} (ms; completion tokens/s)",
        ["stage", "prompt", "tokens", "bus ms", "in-proc ms", "ratio", "bus tok/s",
         "in-proc tok/s"],
        [
            [s, bus["prompt_tokens"][s], bus["tokens"][s], bus["ms"][s], local["ms"][s],
             result["ratio"][s], bus["tokens_s"][s], local["tokens_s"][s]]
            for s in STAGES
        ],
    )  # fmt: skip
    best = Table(
        f"Best single-stream rate ({result['max_tokens']['reviews']} tokens, no schema)",
        ["model", "tokens", "tok/s"],
        [[b["model"], b["tokens"], b["tokens_s"]] for b in result["best"]],
    )
    t = result["targets"]
    targets = Table(
        "Targets",
        ["target", "measured", "met"],
        [
            ["bus/in-process <= 1.05", t["bus_ratio"]["worst"], t["bus_ratio"]["met"]],
            ["reviews >= 80% of best", t["review_share"]["measured"], t["review_share"]["met"]],
            *(
                [[f"batched session >= {TARGET_BATCHED_SPEEDUP}x one call at a time",
                  t["batched_speedup"]["measured"], t["batched_speedup"]["met"]],
                 ["batched reviews >= 80% of the engine alone",
                  t["reviews_share_of_engine"]["measured"], t["reviews_share_of_engine"]["met"]]]
                if "batched_speedup" in t
                else []
            ),
        ],
    )  # fmt: skip
    out = [stages, best, targets]
    if alt := result.get("threads1_slots2_inprocess"):
        out.append(
            Table(
                "threads=1, 2 slots, in-process (vs threads=2, 1 slot)",
                ["stage", "ms", "vs threads=2"],
                [
                    ["reviews", alt["ms"]["reviews"], alt["reviews_ms_vs_threads2"]],
                    ["total", alt["ms"]["total"], alt["total_ms_vs_threads2"]],
                ],
            )
        )
    if batching := result.get("batching"):
        out.append(
            Table(
                f"In-process, batched (batch {batching['batch']}) against one call at a time",
                [
                    "stage",
                    "one at a time ms",
                    "batched ms",
                    "speed-up",
                    "tokens one at a time",
                    "tokens batched",
                ],
                [
                    [
                        s,
                        batching["serial"]["ms"][s],
                        batching["batched"]["ms"][s],
                        batching["speedup"][s],
                        batching["serial"]["tokens"][s],
                        batching["batched"]["tokens"][s],
                    ]
                    for s in STAGES
                ],
            )  # fmt: skip
        )
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--members", nargs="+", help="council members (model or model@persona)")
    p.add_argument("--chairman", help="the chairman's model")
    p.add_argument("--repeats", type=int, default=3, help="bus/in-process pairs (A/B/A/B)")
    p.add_argument("--no-threads", action="store_true", help="skip the threads=1 trial")
    p.add_argument(
        "--batch", type=int, default=0, help="also time in-process sessions batched, up to N"
    )
    args = p.parse_args()
    quiet_logs()
    council = Council(
        args.members or (QUICK_MEMBERS if args.quick else MEMBERS),
        args.chairman or (QUICK_CHAIRMAN if args.quick else CHAIRMAN),
    )
    repeats = 1 if args.quick and args.repeats == 3 else args.repeats
    result = asyncio.run(run(council, repeats, try_threads=not args.no_threads, batch=args.batch))
    report(result, tables(result), args)


if __name__ == "__main__":
    main()
