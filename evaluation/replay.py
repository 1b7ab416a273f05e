"""The chairman's strategies replayed on recorded sessions (no model call: the same
strategy objects the chairman runs, on the answers and ranking it recorded), and how
well the reviews told right answers from wrong ones."""

from __future__ import annotations

import statistics

from council.chairman.aggregate import Score, normalize
from council.chairman.strategies import Standing, Strategy, first_wave
from council.evaluation.records import CouncilAnswer


def replay(strategy: Strategy, c: CouncilAnswer) -> tuple[bool, float, float] | None:
    """What ``strategy`` would have answered in a recorded session, with the tokens
    and seconds of the stages it would have run; None when the record cannot say
    (it skipped the reviews or the synthesis that this strategy needs)."""
    if c.error or not c.ranking:
        return None  # not recorded
    texts = {m: c.opinions[m].text for m in c.members if m in c.opinions}
    if strategy.staged:  # it asks the first wave first, and stops there if an answer stands
        wave = first_wave(c.members)
        first = {m: t for m, t in texts.items() if m in wave}
        if len(first) == len(wave) and (stands := strategy.stands(first, c.chairman)):
            return (c.opinions[stands.members[0]].correct, *_first_wave(c, wave))
    if c.not_needed and not strategy.majority_decides:
        return None  # an opinion this strategy would have waited for
    stands = strategy.stands(texts, c.chairman)
    if stands:
        return (c.opinions[stands.members[0]].correct, *_kept(c, "opinions"))
    if c.reviews_skipped:
        return None
    pick = strategy.concludes(texts, Standing(c.ranking, c.margin, c.tied, c.scores))
    if pick.how != "synthesize":
        return (c.opinions[pick.member].correct, *_kept(c, "opinions", "reviews"))
    if c.strategy != "synthesize":
        return None
    return c.correct, c.tokens, c.stage_s.get("total", c.wall_s)


def _first_wave(c: CouncilAnswer, wave: list[str]) -> tuple[float, float]:
    """What asking only the first wave costs: the recorded stage when the session
    stopped there, else its members' own tokens and the slowest one's latency (they
    are asked together)."""
    if c.opinions.keys() <= set(wave):
        return _kept(c, "opinions")
    return (
        sum(c.opinions[m].tokens for m in wave),
        max(c.opinions[m].wall_s for m in wave),
    )


def _kept(c: CouncilAnswer, *stages: str) -> tuple[float, float]:
    return (
        sum(c.stage_tokens.get(s, 0) for s in stages),
        sum(c.stage_s.get(s, 0.0) for s in stages),
    )


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
