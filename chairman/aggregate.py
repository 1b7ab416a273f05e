"""Reviews → a ranking.

Each reviewer's scores are normalized to z-scores over what it gave in the
session, so a reviewer that gives everything 9 counts as much as one that uses
the whole scale, and one that gives every answer the same score tells nothing
(all zeros). A reviewer's normalized scores count by its weight (its measured
discrimination, when the chairman is given one). Ties are detected, reported,
and broken by a seeded random draw, never by raw means (which favour whoever no
blanket-low reviewer scored).
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from dataclasses import dataclass

from council.bus.events import RankEntry

TIE_EPSILON = 1e-6


@dataclass(frozen=True)
class Score:
    reviewer: str
    reviewed: str
    score: float
    weight: float = 1.0
    """How much this reviewer counts (its measured discrimination)."""


def normalize(scores: list[Score]) -> list[Score]:
    given: dict[str, list[float]] = defaultdict(list)
    for s in scores:
        given[s.reviewer].append(s.score)
    centre = {r: statistics.fmean(v) for r, v in given.items()}
    spread = {r: statistics.pstdev(v) if len(v) > 1 else 0.0 for r, v in given.items()}
    return [
        Score(
            s.reviewer,
            s.reviewed,
            (s.score - centre[s.reviewer]) / spread[s.reviewer] if spread[s.reviewer] else 0.0,
            s.weight,
        )
        for s in scores
    ]


def weighted_mean(scores: list[Score]) -> float:
    """The reviewers' normalized scores of one answer, each counting by its weight."""
    total = sum(s.weight for s in scores)
    return sum(s.weight * s.score for s in scores) / total if total else 0.0


def rank(
    members: list[str], labels: dict[str, str], scores: list[Score], *, seed: int
) -> tuple[list[RankEntry], list[list[str]], str]:
    """Rank ``members`` (those that answered); returns entries, tie groups and the rule."""
    raw: dict[str, list[float]] = defaultdict(list)
    norm: dict[str, list[Score]] = defaultdict(list)
    for s in scores:
        raw[s.reviewed].append(s.score)
    for s in normalize(scores):
        norm[s.reviewed].append(s)
    mean = {m: weighted_mean(norm[m]) for m in members}

    groups: dict[float, list[str]] = defaultdict(list)
    for m in members:
        groups[round(mean[m] / TIE_EPSILON) * TIE_EPSILON].append(m)
    draw = random.Random(seed)
    ordered: list[str] = []
    ties: list[list[str]] = []
    for key in sorted(groups, reverse=True):
        group = sorted(groups[key])
        if len(group) > 1:
            ties.append(list(group))
            draw.shuffle(group)
        ordered.extend(group)
    tied = {m for group in ties for m in group}

    entries = []
    for i, m in enumerate(ordered):
        following = mean[ordered[i + 1]] if i + 1 < len(ordered) else mean[m]
        entries.append(
            RankEntry(
                member=m,
                label=labels.get(m, m),
                rank=i + 1,
                score=round(mean[m], 4),
                raw_mean=round(statistics.fmean(raw[m]), 3) if raw[m] else 0.0,
                spread=round(statistics.pstdev(raw[m]), 3) if len(raw[m]) > 1 else 0.0,
                reviews=len(raw[m]),
                margin=round(max(0.0, mean[m] - following), 4),
                tied=m in tied,
            )
        )
    rule = f"ties broken by a random draw seeded with {seed}" if ties else ""
    return entries, ties, rule


def by_agreement(
    members: list[str],
    labels: dict[str, str],
    majority: list[str],
    rule: str,
) -> tuple[list[RankEntry], list[list[str]], str]:
    """A ranking without reviews: the members whose answer stands first (tied among
    themselves), the others after; ``rule`` says why."""
    rest = [m for m in members if m not in majority]
    entries = [
        RankEntry(
            member=m,
            label=labels.get(m, m),
            rank=i + 1,
            score=1.0 if m in majority else 0.0,
            raw_mean=0.0,
            spread=0.0,
            reviews=0,
            margin=0.0,
            tied=len(majority if m in majority else rest) > 1,
        )  # fmt: skip
        for i, m in enumerate([*majority, *rest])
    ]
    if majority and rest:
        entries[len(majority) - 1].margin = 1.0
    ties = [g for g in (majority, rest) if len(g) > 1]
    return entries, ties, rule


def dissent(entries: list[RankEntry], threshold: float = 2.0) -> list[str]:
    """Lines for the chairman: where reviewers disagreed, and ties."""
    lines = [
        f"Reviewers disagreed about {e.label} (raw scores spread {e.spread:.1f})."
        for e in entries
        if e.spread >= threshold
    ]
    tied = [e.label for e in entries if e.tied]
    if tied:
        lines.append(f"Tied on score: {', '.join(tied)}.")
    return lines
