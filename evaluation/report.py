"""What `council eval` saves per question, and the report made from those records.

Besides each system's accuracy, the report replays the recorded sessions under
every strategy of the chairman's registry (the same objects the chairman runs):
those need no model call beyond what was recorded, so one run measures them
all, on the sessions whose recorded stages a strategy's decisions can be read
from. Their times are the recorded stage times they would keep. "The best
model" is the most accurate model asked alone at its best (greedy, room for its
working), the baseline a council has to beat.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from rich.console import Console
from rich.table import Table

from council.bus.members import method_of, model_of, sample_of
from council.bus.reports import (
    Agreement,
    Calibration,
    Paired,
    Report,
    SystemRow,
)
from council.chairman.extract import extract
from council.chairman.strategies import STRATEGIES
from council.evaluation.records import Answer, CouncilAnswer, Record
from council.evaluation.replay import discrimination, replay


def print_report(report: Report, console: Console) -> None:
    table = Table(title=report.title)
    for column in report.COLUMNS:
        table.add_column(column, justify="left" if column == "system" else "right")
    for cells in report.cells():
        table.add_row(*cells)
    console.print(table)
    for line in report.notes():
        console.print(line)


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
    members: list[str] = next((c.members for c in councils if c.members), [])
    chairman = next((c.chairman for c in councils if c.chairman), "")
    best_rows = _model_rows(records, "best", chairman)
    alone = _model_rows(records, "alone", chairman)
    baselines = best_rows or alone
    best = max(baselines, key=lambda m: baselines[m].accuracy or 0.0, default="")
    others = [(r, r.versus) for r in records if r.versus is not None]
    other_name = (
        f"other council: {others[0][1].strategy_name} ({', '.join(others[0][1].members)})"
        if others
        else ""
    )
    systems = _systems(councils, others, other_name, best)
    systems += [*best_rows.values(), *alone.values()]
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
    chairman_row = baselines.get(chairman)
    if chairman_row and (alone_s := chairman_row.wall_s):
        for r in systems:
            if r.wall_s:
                r.vs_chairman = round(r.wall_s / alone_s, 2)
    overall, by_reviewer = discrimination(councils)
    synthesized = [c for c in councils if c.strategy == "synthesize" and c.ranking]
    timed = [
        (r.council.wall_s, own[chairman].wall_s)
        for r in records
        if chairman in (own := r.best or r.alone)
        and own[chairman].wall_s > 0
        and not r.council.error
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
        versus_best=_versus_best(records, best, baselines[best].system) if best else None,
        versus_other=paired(
            other_name, [(r.council.correct, o.correct) for r, o in others]
        ) if others else None,
        concluded=_concluded(councils),
        agreement=agreement(councils),
        calibration=Calibration(
            weights=_model_weights(by_reviewer), dataset=dataset, questions=len(records),
            date=datetime.now(UTC).strftime("%Y-%m-%d"),
        ) if by_reviewer else None,
    )  # fmt: skip


def _systems(
    councils: list[CouncilAnswer],
    others: list[tuple[Record, CouncilAnswer]],
    other_name: str,
    best: str,
) -> list[SystemRow]:
    """The council's row, and the other council's when the run asked one."""
    systems = [
        row(
            "council",
            "council",
            [(c.correct, c.tokens, c.wall_s) for c in councils],
            [_opinion_of(c, best) for c in councils],
        )
    ]
    if others:
        systems.append(
            row(
                other_name,
                "council",
                [(o.correct, o.tokens, o.wall_s) for _, o in others],
                [_opinion_of(r.council, best) for r, _ in others],
            )
        )
    return systems


Baseline = Literal["best", "alone"]
"""How a model was asked alone: at its best, or as the council asks its members."""
BASELINE_NAMES: dict[Baseline, str] = {"best": " at its best", "alone": " alone"}


def _answers_by_model(records: list[Record], baseline: Baseline) -> dict[str, list[Answer]]:
    """Per model, its answers asked alone in ``records``, in record order."""
    by_model: dict[str, list[Answer]] = {}
    for r in records:
        for model, answer in (r.best if baseline == "best" else r.alone).items():
            by_model.setdefault(model, []).append(answer)
    return by_model


def _model_rows(records: list[Record], baseline: Baseline, chairman: str) -> dict[str, SystemRow]:
    """Per model, its row asked alone: at its best, or as the council asks it."""
    return {
        model: row(
            model + BASELINE_NAMES[baseline] + (" (chairman)" if model == chairman else ""),
            baseline,
            [(a.correct, a.tokens, a.wall_s) for a in answers],
        )
        for model, answers in _answers_by_model(records, baseline).items()
    }


def _concluded(councils: list[CouncilAnswer]) -> dict[str, float]:
    members = list(dict.fromkeys(m for c in councils for m in c.opinions))
    shares = {}
    for member in members:
        opinions = [o for c in councils if (o := c.opinions.get(member))]
        shares[member] = round(sum(1 for o in opinions if o.conclusion) / len(opinions), 3)
    return shares


def agreement(councils: list[CouncilAnswer]) -> list[Agreement]:
    """Each pair of first samples (one per model and method) that both answered."""
    firsts = list(dict.fromkeys(m for c in councils for m in c.opinions if sample_of(m) == 1))
    rows = []
    for i, a in enumerate(firsts):
        for b in firsts[i + 1 :]:
            both = [(c.opinions[a], c.opinions[b]) for c in councils if {a, b} <= c.opinions.keys()]
            if not both:
                continue
            agreeing = [x for x, y in both if _same(x, y)]
            rows.append(
                Agreement(
                    pair=f"{a} ~ {b}",
                    questions=len(both),
                    agree=round(len(agreeing) / len(both), 3),
                    right_when_agreeing=(
                        round(sum(x.correct for x in agreeing) / len(agreeing), 3)
                        if agreeing else None
                    ),
                    either_right=round(sum(x.correct or y.correct for x, y in both) / len(both), 3),
                )
            )  # fmt: skip
    return rows


def _same(x: Answer, y: Answer) -> bool:
    form = extract(x.text)
    return bool(form) and form == extract(y.text)


def _model_weights(by_reviewer: dict[str, float]) -> dict[str, float]:
    """Per reviewer model, its discrimination floored at 0 (samples of one model
    averaged): a reviewer that cannot tell right from wrong counts for nothing."""
    per_model: dict[str, list[float]] = {}
    for member, d in by_reviewer.items():
        per_model.setdefault(model_of(member), []).append(d)
    return {m: round(max(0.0, statistics.fmean(ds)), 3) for m, ds in per_model.items()}


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
    pairs = [
        (r.council.correct, own[model].correct)
        for r in records
        if model in (own := r.best or r.alone)
    ]
    return paired(system, pairs)


def paired(system: str, pairs: list[tuple[bool, bool]]) -> Paired:
    """The council against ``system`` from (council right, system right) per question."""
    council_only = sum(1 for c, m in pairs if c and not m)
    other_only = sum(1 for c, m in pairs if m and not c)
    return Paired(
        system=system,
        council_only=council_only,
        other_only=other_only,
        p_value=round(sign_test(council_only, other_only), 3),
    )


def _opinion_of(c: CouncilAnswer, model: str) -> bool | None:
    """Whether the opinion of the member running ``model`` (``MODEL+code``: computing)
    was right (None: no such opinion)."""
    kind = (model_of(model), method_of(model))
    member = next((m for m in c.opinions if (model_of(m), method_of(m)) == kind), None)
    return c.opinions[member].correct if member else None


def _replayed(councils: list[CouncilAnswer], best: str) -> list[SystemRow]:
    """Every registered strategy on the recorded sessions it can be read from."""
    rows = []
    for name, strategy in STRATEGIES.items():
        replayed = [(c, out) for c in councils if (out := replay(strategy, c)) is not None]
        if replayed:
            rows.append(
                row(
                    f"council: {name}",
                    "replayed",
                    [out for _, out in replayed],
                    [_opinion_of(c, best) for c, _ in replayed],
                )
            )
    stage_one = [(o.correct, o.tokens, o.wall_s) for c in councils for o in c.opinions.values()]
    if stage_one:
        rows.append(row("members' mean (stage 1)", "bound", stage_one))
    return rows


def _by_kind(records: list[Record]) -> dict[str, dict[str, float]]:
    """Accuracy per question kind: the council and each model alone (at its best and
    as the council asks it)."""
    kinds: dict[str, dict[str, float]] = {}
    for kind in sorted({r.kind for r in records}):
        subset = [r for r in records if r.kind == kind]
        figures = {"questions": float(len(subset))}
        figures["council"] = sum(r.council.correct for r in subset) / len(subset)
        others = [r.versus for r in subset if r.versus is not None]
        if others:
            figures["other council"] = sum(o.correct for o in others) / len(others)
        kind_columns: tuple[tuple[Baseline, str], ...] = (("best", " at its best"), ("alone", ""))
        for baseline, suffix in kind_columns:
            for model, answers in _answers_by_model(subset, baseline).items():
                figures[model + suffix] = sum(a.correct for a in answers) / len(answers)
        kinds[kind] = figures
    return kinds
