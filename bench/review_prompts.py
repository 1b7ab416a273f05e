"""Review prompts side by side: the opinions an eval run recorded, reviewed again
under each prompt variant by the same models, in the same run.

Stage 2 is where a council of small models loses accuracy and most of its time
(README, "Answer quality"). Re-running only the pairwise reviews of recorded
opinions measures a prompt in a fraction of a whole eval, and every variant
sees exactly the same answers. Per variant: review discrimination (normalized
score given to right answers minus wrong ones, overall and per reviewer), the
accuracy of the top-ranked opinion (what ``select`` would answer), and stage-2
seconds and tokens per question. The shipped prompt (``check``) is the baseline,
measured in the same run; variants take turns on each question, so a machine
that slows down slows them alike.

    python -m bench.review_prompts [--records FILE] [--questions FILE] [--limit N]
        [--reviewers a,b] [--variants check,judge,verdict] [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
from pathlib import Path
from typing import Any

import msgspec

from bench.common import Table, machine, parser, quiet_logs, report
from council.agents import handlers
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.bus.members import model_of
from council.bus.messages import AgentError, ChatMessage, GenerationOptions, ReviewRequest
from council.chairman import aggregate, prompts
from council.chairman.conductor import CouncilConfig
from council.cli.settings import load as load_settings
from council.evaluation.questions import load
from council.evaluation.report import CouncilAnswer, Record, ReviewScore, discrimination

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


def labels_of(record: Record) -> dict[str, str]:
    """Each member's anonymous label, as the chairman gives them (member order)."""
    members = list(record.council.opinions)
    return dict(zip(members, prompts.labels_for(len(members)), strict=True))


def requests_for(
    record: Record, question: str, reviewers: list[str], system: str
) -> list[ReviewRequest]:
    """Every pairwise review of the record's opinions by ``reviewers``, as the
    chairman would ask it, with ``system`` as the reviewers' instructions."""
    members = list(record.council.opinions)
    labels = labels_of(record)
    seed = int(hashlib.sha256(record.id.encode()).hexdigest()[:7], 16)
    requests = []
    for reviewer in (m for m in members if m in reviewers):
        for index, reviewed in enumerate(m for m in members if m != reviewer):
            user = prompts.pairwise_messages(
                question, labels[reviewed], record.council.opinions[reviewed].text
            )[1]  # the same for every variant: the variants differ in the system prompt
            requests.append(
                ReviewRequest(
                    session_id=record.id,
                    member=reviewer,
                    model=model_of(reviewer),
                    messages=[ChatMessage("system", system), user],
                    options=GenerationOptions(
                        temperature=CONFIG.review_temperature,
                        seed=seed + index,
                        max_tokens=CONFIG.review_max_tokens,
                    ),
                    timeout_s=CONFIG.reviews_deadline_s,
                    mode="pairwise",
                    labels=[labels[reviewed]],
                    check_first=system in CHECKS_FIRST,
                )
            )
    return requests


async def review_all(
    runtime: EmbeddedRuntime, record: Record, requests: list[ReviewRequest]
) -> tuple[CouncilAnswer, float, int, int]:
    """The record's council with these reviews instead, seconds and tokens spent,
    and how many reviews failed."""
    by_label = {label: m for m, label in labels_of(record).items()}
    scores: list[ReviewScore] = []
    seconds, tokens, failed = 0.0, 0, 0
    for request in requests:
        result = await handlers.handle_review(runtime, request)
        if isinstance(result, AgentError):
            failed += 1
            continue
        seconds += result.latency_ms / 1000
        tokens += result.usage.prompt_tokens + result.usage.completion_tokens
        for label, score in result.scores.items():
            scores.append(
                ReviewScore(reviewer=request.member, reviewed=by_label[label], score=score)
            )
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
    runtime = EmbeddedRuntime(load_settings().models_path, auto_pull=False)
    judged: dict[str, list[tuple[CouncilAnswer, float, int, int]]] = {v: [] for v in variants}
    try:
        for model in dict.fromkeys(model_of(r) for r in reviewers):
            await runtime.load(model)
        for i, record in enumerate(records, 1):
            for variant in variants:
                requests = requests_for(record, questions[record.id], reviewers, VARIANTS[variant])
                judged[variant].append(await review_all(runtime, record, requests))
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
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    args = p.parse_args()
    quiet_logs()
    records = [
        msgspec.json.decode(line, type=Record)
        for line in args.records.read_bytes().splitlines()
        if line.strip()
    ]
    records = [r for r in records if len(r.council.opinions) > 1]
    limit = 2 if args.quick else args.limit
    step = max(1, len(records) // max(1, limit))
    records = records[::step][:limit]
    questions = {q.id: q.question for q in load(args.questions)}
    members = list(dict.fromkeys(m for r in records for m in r.council.opinions))
    reviewers = [m for m in args.reviewers.split(",") if m] or members
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    result = asyncio.run(run(records, questions, reviewers, variants))
    report(result, tables(result), args)


if __name__ == "__main__":
    main()
