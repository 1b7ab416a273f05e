"""What `council eval` saves per question, and the report made from those records.

Besides each system's accuracy, the report replays the recorded stages under the
chairman's other strategies (select, vote, close, skipping reviews when the
answers agree, majority-or-chairman) and reviewers weighted by how they agree
with each other: those need no model call beyond what was recorded, so one run
measures them all. Their times are the recorded stage times they would keep.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
from rich.console import Console
from rich.table import Table

from council.chairman import extract
from council.chairman.aggregate import Score, normalize
from council.chairman.prompts import split_member

CLOSE_MARGIN = 0.5


class Answer(msgspec.Struct, kw_only=True):
    text: str = ""
    correct: bool = False
    tokens: int = 0
    """Prompt and completion tokens."""
    wall_s: float = 0.0
    error: str = ""


class ReviewScore(msgspec.Struct, kw_only=True):
    reviewer: str
    reviewed: str
    score: float


class CouncilAnswer(Answer, kw_only=True):
    members: list[str] = []
    chairman: str = ""
    opinions: dict[str, Answer] = {}
    reviews: list[ReviewScore] = []
    ranking: list[str] = []
    margin: float = 0.0
    tied: bool = False
    stage_s: dict[str, float] = {}
    stage_tokens: dict[str, int] = {}
    strategy: str = ""
    fallback: str = ""
    reviews_skipped: bool = False


class Record(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    council: CouncilAnswer
    alone: dict[str, Answer]
    """Per model: the model asked alone."""


class SystemRow(msgspec.Struct, kw_only=True):
    system: str
    group: str
    """``council``, ``alone`` (one model), ``stage 1`` (one member's opinion inside
    the council: a second sample of it alone), ``replayed`` (another strategy on
    the recorded stages) or ``bound`` (oracle, members' mean)."""
    correct: int
    n: int
    accuracy: float
    low: float
    high: float
    tokens: float
    """Mean per question."""
    wall_s: float
    """Mean per question."""
    vs_chairman: float | None = None
    """``wall_s`` over the chairman's model alone's (the ratio of mean times)."""
    gained: int | None = None
    """Questions this system got right where the best model's own opinion in the
    same session was wrong: a comparison free of that model's sampling luck."""
    lost: int | None = None
    """The reverse of ``gained``."""


class Paired(msgspec.Struct, kw_only=True):
    """The council against one other system on the same questions: only the
    questions where exactly one of them was right tell them apart."""

    system: str
    council_only: int
    """Questions the council got right and the other system wrong."""
    other_only: int
    p_value: float
    """Two-sided exact sign test on those questions: how likely a split at least
    this uneven is if neither system is better."""


class Report(msgspec.Struct, kw_only=True):
    dataset: str
    label: str
    date: str
    machine: str
    questions: int
    answered: int
    members: list[str]
    chairman: str
    systems: list[SystemRow]
    review_discrimination: float | None
    """Mean per-reviewer z-score given to right answers minus wrong ones."""
    discrimination_by_reviewer: dict[str, float]
    synthesis_broke: int
    """Synthesized answers that were wrong although the top-ranked opinion was right."""
    synthesis_fixed: int
    fallbacks: int
    council_errors: int
    time_vs_chairman: float | None
    """The council's mean wall time per question over the chairman's model alone's."""
    time_vs_chairman_median: float | None = None
    """The median of the per-question ratios (short answers weigh as much as long)."""
    by_kind: dict[str, dict[str, float]]
    versus_best: Paired | None = None
    """The council against the most accurate model alone."""

    def print(self, console: Console) -> None:
        table = Table(title=f"{self.dataset} · {self.label} · {self.answered}/{self.questions}")
        columns = (
            "system", "accuracy", "95% interval", "right", "tokens/q", "s/q", "× chairman",
            "vs best's opinion",
        )  # fmt: skip
        for column in columns:
            table.add_column(column, justify="left" if column == "system" else "right")
        for row in self.systems:
            table.add_row(
                row.system,
                f"{row.accuracy:.1%}",
                f"{row.low:.1%}–{row.high:.1%}",
                f"{row.correct}/{row.n}",
                f"{row.tokens:.0f}",
                f"{row.wall_s:.1f}",
                "" if row.vs_chairman is None else f"{row.vs_chairman:.1f}×",
                "" if row.gained is None else f"+{row.gained}/−{row.lost}",
            )
        console.print(table)
        if self.review_discrimination is not None:
            by = ", ".join(f"{k} {v:+.2f}" for k, v in self.discrimination_by_reviewer.items())
            console.print(f"review discrimination {self.review_discrimination:+.2f} ({by})")
        console.print(
            f"synthesis turned a right top-ranked answer wrong {self.synthesis_broke}×, "
            f"a wrong one right {self.synthesis_fixed}×; fallbacks {self.fallbacks}; "
            f"council errors {self.council_errors}"
        )
        if self.time_vs_chairman is not None:
            console.print(
                f"council time / chairman's model alone: {self.time_vs_chairman:.1f}× "
                f"(median per question {self.time_vs_chairman_median or 0:.1f}×)"
            )
        if self.versus_best is not None:
            v = self.versus_best
            console.print(
                f"council against {v.system}: right where it was wrong {v.council_only}×, "
                f"wrong where it was right {v.other_only}× (sign test p = {v.p_value:.2f})"
            )


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval: sensible at 0 and 100 % and for small n."""
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def row(
    system: str,
    group: str,
    outcomes: Sequence[tuple[bool, float, float]],
    anchor: Sequence[bool | None] = (),
) -> SystemRow:
    """A system's row from (correct, tokens, seconds) per question; ``anchor``, when
    given, is per question whether the best model's own opinion was right."""
    n = len(outcomes)
    pairs = list(zip((ok for ok, _, _ in outcomes), anchor, strict=True)) if anchor else []
    correct = sum(1 for ok, _, _ in outcomes if ok)
    low, high = wilson(correct, n)
    return SystemRow(
        system=system,
        group=group,
        correct=correct,
        n=n,
        accuracy=correct / n if n else 0.0,
        low=low,
        high=high,
        tokens=statistics.fmean(t for _, t, _ in outcomes) if n else 0.0,
        wall_s=statistics.fmean(s for _, _, s in outcomes) if n else 0.0,
        gained=sum(1 for ok, a in pairs if ok and a is False) if pairs else None,
        lost=sum(1 for ok, a in pairs if not ok and a is True) if pairs else None,
    )


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial test of ``wins`` against ``losses`` at even odds."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def build_report(records: list[Record], *, dataset: str, label: str, total: int) -> Report:
    councils = [r.council for r in records]
    members = next((c.members for c in councils if c.members), [])
    chairman = next((c.chairman for c in councils if c.chairman), "")
    alone: dict[str, SystemRow] = {}
    for model in dict.fromkeys(m for r in records for m in r.alone):
        answers = [r.alone[model] for r in records if model in r.alone]
        name = f"{model} alone" + (" (chairman)" if model == chairman else "")
        alone[model] = row(name, "alone", [(a.correct, a.tokens, a.wall_s) for a in answers])
    best = max(alone, key=lambda m: alone[m].accuracy, default="")
    systems = [
        row(
            "council",
            "council",
            [(c.correct, c.tokens, c.wall_s) for c in councils],
            [_opinion_of(c, best) for c in councils],
        ),
        *alone.values(),
    ]
    systems += _stage_one(councils)
    systems += _replayed(councils, best)
    reviewed = [c for c in councils if c.opinions]
    systems.append(
        row(
            "oracle: any member right",
            "bound",
            [(any(o.correct for o in c.opinions.values()), 0, 0) for c in reviewed],
        )
    )
    chairman_row = alone.get(chairman)
    if chairman_row and chairman_row.wall_s > 0:
        for r in systems:
            if r.wall_s > 0:
                r.vs_chairman = round(r.wall_s / chairman_row.wall_s, 2)
    overall, by_reviewer = discrimination(councils)
    synthesized = [c for c in councils if c.strategy == "synthesize" and c.ranking]
    timed = [
        (r.council.wall_s, r.alone[chairman].wall_s)
        for r in records
        if chairman in r.alone and r.alone[chairman].wall_s > 0 and not r.council.error
    ]
    return Report(
        dataset=dataset,
        label=label,
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        questions=total,
        answered=len(records),
        members=members,
        chairman=chairman,
        systems=systems,
        review_discrimination=overall,
        discrimination_by_reviewer=by_reviewer,
        synthesis_broke=sum(
            1 for c in synthesized if c.opinions[c.ranking[0]].correct and not c.correct
        ),
        synthesis_fixed=sum(
            1 for c in synthesized if not c.opinions[c.ranking[0]].correct and c.correct
        ),
        fallbacks=sum(1 for c in councils if c.fallback),
        council_errors=sum(1 for c in councils if c.error),
        time_vs_chairman=(sum(c for c, _ in timed) / sum(a for _, a in timed) if timed else None),
        time_vs_chairman_median=statistics.median(c / a for c, a in timed) if timed else None,
        by_kind=_by_kind(records),
        versus_best=_versus_best(records, best, alone[best].system) if best else None,
    )


def _stage_one(councils: list[CouncilAnswer]) -> list[SystemRow]:
    """Each member's own opinion in the council: asked as it is alone, with another
    seed, so it doubles the sample of what that member gets right."""
    members = list(dict.fromkeys(m for c in councils for m in c.opinions))
    return [
        row(
            f"{member} in stage 1",
            "stage 1",
            [(o.correct, o.tokens, o.wall_s) for c in councils if (o := c.opinions.get(member))],
        )
        for member in members
    ]


def _versus_best(records: list[Record], model: str, system: str) -> Paired:
    pairs = [(r.council.correct, r.alone[model].correct) for r in records if model in r.alone]
    council_only = sum(1 for c, m in pairs if c and not m)
    other_only = sum(1 for c, m in pairs if m and not c)
    return Paired(
        system=system,
        council_only=council_only,
        other_only=other_only,
        p_value=round(sign_test(council_only, other_only), 3),
    )


def _opinion_of(c: CouncilAnswer, model: str) -> bool | None:
    """Whether the opinion of the member running ``model`` was right (None: no such opinion)."""
    member = next((m for m in c.opinions if split_member(m)[0] == model), None)
    return c.opinions[member].correct if member else None


def _replayed(councils: list[CouncilAnswer], best: str) -> list[SystemRow]:
    """The other strategies on the recorded stages of synthesized sessions."""
    base = [c for c in councils if c.ranking and c.strategy == "synthesize"]
    if not base:
        return []
    anchor = [_opinion_of(c, best) for c in base]

    def kept(c: CouncilAnswer, *stages: str) -> tuple[float, float]:
        return (
            sum(c.stage_tokens.get(s, 0) for s in stages),
            sum(c.stage_s.get(s, 0.0) for s in stages),
        )

    def select(c: CouncilAnswer) -> tuple[bool, float, float]:
        return (c.opinions[c.ranking[0]].correct, *kept(c, "opinions", "reviews"))

    def vote(c: CouncilAnswer) -> tuple[bool, float, float]:
        texts = {m: c.opinions[m].text for m in c.ranking}
        return (c.opinions[extract.vote(texts, c.ranking)].correct, *kept(c, "opinions", "reviews"))

    def close(c: CouncilAnswer) -> tuple[bool, float, float]:
        if c.tied or c.margin < CLOSE_MARGIN:
            return c.correct, c.tokens, c.stage_s.get("total", c.wall_s)
        return select(c)

    def majority_then_synthesize(c: CouncilAnswer) -> tuple[bool, float, float]:
        agreeing = extract.majority({m: c.opinions[m].text for m in c.ranking})
        if agreeing:
            return (c.opinions[agreeing[0]].correct, *kept(c, "opinions"))
        return c.correct, c.tokens, c.stage_s.get("total", c.wall_s)

    def majority_else_chairman(c: CouncilAnswer) -> tuple[bool, float, float]:
        texts = {m: c.opinions[m].text for m in c.ranking}
        own = [m for m in c.ranking if split_member(m)[0] == c.chairman]
        pick = (extract.majority(texts) or own or c.ranking)[0]
        return (c.opinions[pick].correct, *kept(c, "opinions"))

    weighted = _select_by_weighted_reviews(base)
    stage_one = [(o.correct, o.tokens, o.wall_s) for c in base for o in c.opinions.values()]
    return [
        row("council: select top-ranked", "replayed", [select(c) for c in base], anchor),
        row("council: vote", "replayed", [vote(c) for c in base], anchor),
        row(
            f"council: close (margin {CLOSE_MARGIN})", "replayed", [close(c) for c in base], anchor
        ),
        row(
            "council: a majority's answer skips stages 2-3",
            "replayed",
            [majority_then_synthesize(c) for c in base],
            anchor,
        ),
        row(
            "council: majority-or-chairman (no reviews)",
            "replayed",
            [majority_else_chairman(c) for c in base],
            anchor,
        ),
        row(
            "council: select, reviewers weighted by agreement",
            "replayed",
            [(ok, *kept(c, "opinions", "reviews")) for c, ok in zip(base, weighted, strict=True)],
            anchor,
        ),
        row("members' mean (stage 1)", "bound", stage_one),
    ]


def agreement_weights(base: list[CouncilAnswer], prior: int = 5) -> list[dict[str, float]]:
    """Per session, the weight each reviewer had going in: in the sessions before, how
    much more often than not it agreed with each other reviewer of an answer on
    whether that answer was above or below the reviewer's own mean (no answer key
    needed). A reviewer starts at 1, as if from ``prior`` agreeing verdicts; one
    that scores at random drifts to 0."""
    agreed: dict[str, list[float]] = {}
    weights = []
    for c in base:
        weights.append(
            {
                reviewer: max(0.0, (sum(seen) + prior) / (len(seen) + prior))
                for reviewer, seen in agreed.items()
            }
        )
        for given in _normalized_by_answer(c).values():
            for reviewer, z in given.items():
                for other, v in given.items():
                    if other != reviewer and z and v:
                        agreed.setdefault(reviewer, []).append(1.0 if z * v > 0 else -1.0)
    return weights


def _select_by_weighted_reviews(base: list[CouncilAnswer]) -> list[bool]:
    """Whether the top opinion is right when reviewers count by ``agreement_weights``."""
    picks = []
    for c, weight in zip(base, agreement_weights(base), strict=True):
        by_answer = _normalized_by_answer(c)
        merit = {m: _weighted_mean(by_answer.get(m, {}), weight) for m in c.ranking}
        top = max(c.ranking, key=lambda m: (merit[m], -c.ranking.index(m)))
        picks.append(c.opinions[top].correct)
    return picks


def _normalized_by_answer(c: CouncilAnswer) -> dict[str, dict[str, float]]:
    """Per answer, each reviewer's normalized score of it."""
    scores = [Score(r.reviewer, r.reviewed, r.score) for r in c.reviews if r.reviewed in c.opinions]
    by_answer: dict[str, dict[str, float]] = {}
    for s in normalize(scores):
        by_answer.setdefault(s.reviewed, {})[s.reviewer] = s.score
    return by_answer


def _weighted_mean(scores: dict[str, float], weight: dict[str, float]) -> float:
    total = sum(weight.get(r, 1.0) for r in scores)
    return sum(weight.get(r, 1.0) * z for r, z in scores.items()) / total if total else 0.0


def discrimination(councils: list[CouncilAnswer]) -> tuple[float | None, dict[str, float]]:
    """Mean normalized score given to right answers minus wrong ones: overall, and
    per reviewer (for those that scored both)."""
    right: dict[str, list[float]] = {}
    wrong: dict[str, list[float]] = {}
    for c in councils:
        scores = [
            Score(r.reviewer, r.reviewed, r.score) for r in c.reviews if r.reviewed in c.opinions
        ]
        for s in normalize(scores):
            bucket = right if c.opinions[s.reviewed].correct else wrong
            bucket.setdefault(s.reviewer, []).append(s.score)
    by_reviewer = {
        reviewer: round(statistics.fmean(right[reviewer]) - statistics.fmean(wrong[reviewer]), 3)
        for reviewer in sorted(right.keys() & wrong.keys())
    }
    all_right = [v for vs in right.values() for v in vs]
    all_wrong = [v for vs in wrong.values() for v in vs]
    if not all_right or not all_wrong:
        return None, by_reviewer
    return round(statistics.fmean(all_right) - statistics.fmean(all_wrong), 3), by_reviewer


def _by_kind(records: list[Record]) -> dict[str, dict[str, float]]:
    """Accuracy per question kind: the council and each model alone."""
    kinds: dict[str, dict[str, float]] = {}
    for kind in sorted({r.kind for r in records}):
        subset = [r for r in records if r.kind == kind]
        figures = {"questions": float(len(subset))}
        figures["council"] = sum(r.council.correct for r in subset) / len(subset)
        for model in dict.fromkeys(m for r in subset for m in r.alone):
            answers = [r.alone[model] for r in subset if model in r.alone]
            figures[model] = sum(a.correct for a in answers) / len(answers)
        kinds[kind] = figures
    return kinds
