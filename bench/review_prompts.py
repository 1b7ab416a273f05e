"""Review prompts side by side: the opinions an eval run recorded, reviewed again
under each prompt variant by the same models, in the same run.

Stage 2 is where a council of small models loses accuracy and most of its time
(README, "Answer quality"). Re-running only the pairwise reviews of recorded
opinions measures a prompt in a fraction of a whole eval, and every variant
sees exactly the same answers. Per variant: review discrimination (normalized
score given to right answers minus wrong ones, overall and per reviewer), the
accuracy of the top-ranked opinion (what ``select`` would answer), and stage-2
wall seconds (a question's reviews sent at once, batched as ``COUNCIL_BATCH``
says) and tokens per question. The shipped prompt (``check``) is the baseline,
measured in the same run; variants take turns on each question, so a machine
that slows down slows them alike. The ``solve`` variants ask for no score: the
reviewer works the question out and code compares its final answer with the
response's.

    python -m bench.review_prompts [--records FILE] [--questions FILE] [--limit N]
        [--reviewers a,b] [--variants check,solve,...] [--disagreeing] [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.common import Table, machine, parser, quiet_logs, report
from council.agents import handlers
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.assembly.settings import load as load_settings
from council.bus.members import model_of
from council.bus.messages import AgentError, ChatMessage, GenerationOptions, ReviewRequest
from council.chairman import aggregate, extract, prompts
from council.chairman.config import CouncilConfig
from council.evaluation.questions import load
from council.evaluation.records import CouncilAnswer, Record, ReviewScore
from council.evaluation.replay import discrimination

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "evals" / "results" / "dev--default.jsonl"
QUESTIONS = ROOT / "evals" / "dev.jsonl"
CONFIG = CouncilConfig()

_SCORE_JSON = (
    ' Reply with a JSON object only: {"score": <integer 1-10>, '
    '"justification": "<one short sentence>"}.'
)
VARIANTS: dict[str, str] = {
    "check": prompts.PAIRWISE_SYSTEM,
    "check-first": prompts.CHECK_FIRST_SYSTEM,
    "judge": (
        "You are a strict reviewer on a council of AI models. You see a question and "
        "one anonymous response. " + prompts.FENCE_NOTE + " First check whether the "
        "response answers the question correctly; then judge its clarity. Reply with a "
        'JSON object only: {"score": <integer 1-10, 10 = correct and clear, 1 = wrong '
        'or off-topic>, "justification": "<one short sentence>"}.'
    ),
    "verdict": (
        "You grade answers on a council of AI models. You see a question and one "
        "anonymous response. " + prompts.FENCE_NOTE + " Is the response's final "
        "answer correct? Score 10 for correct and 1 for incorrect; use no other "
        "score." + _SCORE_JSON
    ),
}
"""The shipped prompt (``check``) first: it is the baseline of the run."""
CHECKS_FIRST = {prompts.CHECK_FIRST_SYSTEM}
"""Variants whose verdict has the reviewer's working before the score."""

SOLVE_SYSTEM = (
    "You check an answer on a council of AI models. You see a question and one "
    "anonymous response. " + prompts.FENCE_NOTE + " Do not trust the response: work "
    "the question out yourself, step by step, and check each step. Then end with one "
    f"last line that starts with '{prompts.FINAL_LINE}' followed by the correct answer "
    "alone, whether or not it is the response's."
)
SOLVE_ALONE_SYSTEM = prompts.MEMBER_SYSTEM.format(persona="").strip()
SOLVES: dict[str, tuple[str, bool]] = {
    "solve": (SOLVE_SYSTEM, True),
    "solve-alone": (SOLVE_ALONE_SYSTEM, False),
}
"""Variants whose reviewer writes its own worked answer (seeing the response, or
not), and whose score is code's: 10 when its final answer agrees with the
response's, 1 when not. The model is not asked for a score at all."""


def labels_of(record: Record) -> dict[str, str]:
    """Each member's anonymous label, as the chairman gives them (member order)."""
    members = list(record.council.opinions)
    return dict(zip(members, prompts.labels_for(len(members)), strict=True))


KNOWN = [*VARIANTS, *SOLVES]


def requests_for(
    record: Record, question: str, reviewers: list[str], variant: str
) -> list[ReviewRequest]:
    """Every pairwise review of the record's opinions by ``reviewers``, as the
    chairman would ask it, with the variant's instructions."""
    system, shows = SOLVES.get(variant) or (VARIANTS[variant], True)
    max_tokens = CONFIG.opinion_max_tokens if variant in SOLVES else CONFIG.review_max_tokens
    members = list(record.council.opinions)
    labels = labels_of(record)
    seed = int(hashlib.sha256(record.id.encode()).hexdigest()[:7], 16)
    requests = []
    for reviewer in (m for m in members if m in reviewers):
        for index, reviewed in enumerate(m for m in members if m != reviewer):
            user = (
                prompts.pairwise_messages(
                    question, labels[reviewed], record.council.opinions[reviewed].text
                )[1]  # the same for every scoring variant: they differ in the system prompt
                if shows
                else ChatMessage("user", question)
            )
            requests.append(
                ReviewRequest(
                    session_id=record.id,
                    member=reviewer,
                    model=model_of(reviewer),
                    messages=[ChatMessage("system", system), user],
                    options=GenerationOptions(
                        temperature=CONFIG.review_temperature,
                        seed=seed + index,
                        max_tokens=max_tokens,
                    ),
                    timeout_s=CONFIG.reviews_deadline_s,
                    mode="pairwise",
                    labels=[labels[reviewed]],
                    check_first=system in CHECKS_FIRST,
                )
            )
    return requests


async def solved(
    runtime: EmbeddedRuntime, request: ReviewRequest, reviewed: str
) -> tuple[float, int]:
    """A solving reviewer's score of ``reviewed`` (an answer's text), and its tokens:
    10 when the final answers agree, 1 when not."""
    text, tokens = [], 0
    async for chunk in runtime.chat(request.model, request.messages, options=request.options):
        text.append(chunk.text)
        if chunk.usage:
            tokens = chunk.usage.prompt_tokens + chunk.usage.completion_tokens
    agrees = extract.extract("".join(text)) == extract.extract(reviewed)
    return (10.0 if agrees else 1.0), tokens


async def review_all(
    runtime: EmbeddedRuntime, record: Record, requests: list[ReviewRequest], solves: bool
) -> tuple[CouncilAnswer, float, int, int]:
    """The record's council with these reviews instead (sent at once, as the chairman
    sends them), the wall seconds and tokens spent, and how many reviews failed."""
    by_label = {label: m for m, label in labels_of(record).items()}
    scores: list[ReviewScore] = []
    tokens, failed = 0, 0
    started = time.perf_counter()

    async def one(request: ReviewRequest) -> None:
        nonlocal tokens, failed
        reviewed = by_label[request.labels[0]]
        if solves:
            score, used = await solved(runtime, request, record.council.opinions[reviewed].text)
            tokens += used
            scores.append(ReviewScore(reviewer=request.member, reviewed=reviewed, score=score))
            return
        result = await handlers.handle_review(runtime, request)
        if isinstance(result, AgentError):
            failed += 1
            return
        tokens += result.usage.prompt_tokens + result.usage.completion_tokens
        for label, score in result.scores.items():
            scores.append(
                ReviewScore(reviewer=request.member, reviewed=by_label[label], score=score)
            )

    await asyncio.gather(*(one(r) for r in requests))
    seconds = time.perf_counter() - started
    ranked, _, _ = aggregate.rank(
        list(record.council.opinions),
        {m: m for m in record.council.opinions},
        [aggregate.Score(s.reviewer, s.reviewed, s.score) for s in scores],
        seed=7,
    )
    council = CouncilAnswer(
        opinions=record.council.opinions,
        reviews=scores,
        ranking=[e.member for e in ranked],
    )
    return council, seconds, tokens, failed


async def run(
    records: list[Record], questions: dict[str, str], reviewers: list[str], variants: list[str]
) -> dict[str, Any]:
    settings = load_settings()
    runtime = EmbeddedRuntime(
        settings.runtime.models_path, auto_pull=False, batch=settings.runtime.batch
    )
    judged: dict[str, list[tuple[CouncilAnswer, float, int, int]]] = {v: [] for v in variants}
    try:
        for model in dict.fromkeys(model_of(r) for r in reviewers):
            await runtime.load(model)
        for i, record in enumerate(records, 1):
            for variant in variants:
                requests = requests_for(record, questions[record.id], reviewers, variant)
                judged[variant].append(
                    await review_all(runtime, record, requests, variant in SOLVES)
                )
            print(f"{i}/{len(records)} {record.id}", file=sys.stderr, flush=True)
    finally:
        await runtime.close()
    result: dict[str, Any] = {"machine": machine(), "questions": len(records), "variants": {}}
    for variant, outcomes in judged.items():
        councils = [c for c, _, _, _ in outcomes]
        overall, by_reviewer = discrimination(councils)
        result["variants"][variant] = {
            "discrimination": overall,
            "by_reviewer": by_reviewer,
            "select_accuracy": statistics.fmean(c.opinions[c.ranking[0]].correct for c in councils),
            "seconds_per_question": statistics.fmean(s for _, s, _, _ in outcomes),
            "tokens_per_question": statistics.fmean(t for _, _, t, _ in outcomes),
            "failed_reviews": sum(f for _, _, _, f in outcomes),
        }
    base = result["variants"].get("check", {}).get("seconds_per_question")
    for figures in result["variants"].values():
        figures["time_vs_shipped"] = figures["seconds_per_question"] / base if base else None
    return result


def tables(result: dict[str, Any]) -> list[Table]:
    table = Table(
        f"pairwise reviews of recorded opinions, {result['questions']} questions",
        [
            "variant",
            "discrimination",
            "select acc.",
            "s/q",
            "tokens/q",
            "× check",
            "failed",
            "by reviewer",
        ],
    )
    for name, f in result["variants"].items():
        by = ", ".join(f"{k} {v:+.2f}" for k, v in f["by_reviewer"].items())
        table.rows.append(
            [
                name,
                "—" if f["discrimination"] is None else f"{f['discrimination']:+.2f}",
                f"{f['select_accuracy']:.1%}",
                f["seconds_per_question"],
                f["tokens_per_question"],
                "—" if f["time_vs_shipped"] is None else f"{f['time_vs_shipped']:.2f}",
                f["failed_reviews"],
                by,
            ]
        )
    return [table]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--records", type=Path, default=RECORDS, help="a `council eval` results file")
    p.add_argument("--questions", type=Path, default=QUESTIONS, help="the eval's question file")
    p.add_argument("--limit", type=int, default=30, help="questions, spread over the records")
    p.add_argument("--reviewers", default="", help="comma-separated members (default: all)")
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(KNOWN)}"
    )
    p.add_argument(
        "--disagreeing",
        action="store_true",
        help="only the records whose council ran reviews (its members disagreed)",
    )
    args = p.parse_args()
    quiet_logs()
    records = [
        msgspec.json.decode(line, type=Record)
        for line in args.records.read_bytes().splitlines()
        if line.strip()
    ]
    records = [r for r in records if len(r.council.opinions) > 1]
    if args.disagreeing:
        records = [r for r in records if not r.council.reviews_skipped]
    limit = 2 if args.quick else args.limit
    step = max(1, len(records) // max(1, limit))
    records = records[::step][:limit]
    questions = {q.id: q.question for q in load(args.questions)}
    members = list(dict.fromkeys(m for r in records for m in r.council.opinions))
    reviewers = [m for m in args.reviewers.split(",") if m] or members
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in KNOWN]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(KNOWN)}")
    result = asyncio.run(run(records, questions, reviewers, variants))
    report(result, tables(result), args)


if __name__ == "__main__":
    main()
