"""How the chairman concludes a session: one object per strategy, in one registry.

A strategy decides twice. After the opinions: whether an answer already stands
(the members agree) so that reviews and synthesis are skipped, and why. After
the ranking: whether the chairman's model writes the answer or an opinion is
chosen. The conductor asks these questions of a live session, and the eval
replays them on recorded ones, so a replayed figure is the figure of the code
that runs.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from council.bus.members import method_of, model_of, sample_of
from council.chairman import extract

How = Literal["synthesize", "select", "vote"]


@dataclass(frozen=True)
class Stands:
    """Members whose answer stands without reviews (the first is the one given)."""

    members: list[str]
    how: How
    reason: str


@dataclass(frozen=True)
class Standing:
    """What the ranking says: members best first, and the leader's margin."""

    order: list[str]
    margin: float = 0.0
    tied: bool = False
    scores: list[float] = field(default_factory=list)
    """Each member's score, in ``order`` (none in records older than it)."""

    def lead(self, texts: Texts) -> float | None:
        """The leader's lead over the best-placed member whose answer differs; None when
        every member gave the leader's answer. Members that gave one answer are no
        contest to each other: two programs that both printed 87, ranked first and
        second, are not a close call."""
        if len(self.scores) != len(self.order) or not self.order:
            return 0.0 if self.tied else self.margin
        form = extract.extract(texts.get(self.order[0], ""))
        for member, score in zip(self.order[1:], self.scores[1:], strict=True):
            if not form or extract.extract(texts.get(member, "")) != form:
                return self.scores[0] - score
        return None


@dataclass(frozen=True)
class Pick:
    how: How
    member: str = ""
    """The opinion chosen, when the chairman's model does not write the answer."""


Texts = dict[str, str]
"""Each answered member's opinion, in the session's member order."""


def _answer_of(members: list[str], texts: Texts) -> str:
    return extract.extract(texts[members[0]]) or "the same answer"


def _never(texts: Texts, chairman: str) -> Stands | None:
    return None


def _unanimous(texts: Texts, chairman: str) -> Stands | None:
    agreeing = extract.unanimous(texts)
    if not agreeing:
        return None
    return Stands(
        agreeing, "vote", f"all {len(agreeing)} members answered {_answer_of(agreeing, texts)}"
    )


def _majority(texts: Texts, chairman: str) -> Stands | None:
    agreeing = extract.majority(texts)
    if not agreeing:
        return None
    return Stands(
        agreeing,
        "vote",
        f"{len(agreeing)} of {len(texts)} members answered {_answer_of(agreeing, texts)}",
    )


def _across_methods(texts: Texts, chairman: str) -> Stands | None:
    """The answer given by the most members, when members of more than one method
    (words, code) gave it and no other answer has as many; a majority when the
    council has one method only. Once the further samples answered too, the answer
    most members gave stands whatever their methods, a tie going to the answer more
    members gave in words, then to the earlier member's: of 41 development questions
    whose first members disagreed, reviews then a close call settled 26 right, and
    this 30 (the words samples were right more often there than the programs)."""
    if len({method_of(m) for m in texts}) < 2:
        return _majority(texts, chairman)
    supporters: dict[str, list[str]] = defaultdict(list)
    for member, text in texts.items():
        if form := extract.extract(text):
            supporters[form].append(member)
    if not supporters:
        return None
    most = max(len(group) for group in supporters.values())
    tied = [group for group in supporters.values() if len(group) == most]
    best = tied[0]
    methods = sorted({method_of(m) for m in best})
    if len(tied) == 1 and len(methods) > 1:
        return Stands(
            best,
            "vote",
            f"{len(best)} of {len(texts)} members, in {' and '.join(methods)}, answered "
            f"{_answer_of(best, texts)}",
        )
    if all(sample_of(m) == 1 for m in texts):
        return None  # the first members disagree: the further samples are drawn
    best = max(tied, key=lambda group: sum(method_of(m) == "words" for m in group))
    return Stands(
        best,
        "vote",
        f"the most members ({len(best)} of {len(texts)}) answered {_answer_of(best, texts)}"
        + (", tied with another answer" if len(tied) > 1 else ""),
    )


def first_wave(members: list[str]) -> list[str]:
    """The members a staged strategy asks first: the first sample of each model and
    method; the others are drawn only when these disagree."""
    return [m for m in members if sample_of(m) == 1] or members[:1]


def _majority_or_chairman(texts: Texts, chairman: str) -> Stands | None:
    stands = _majority(texts, chairman)
    if stands:
        return stands
    own = [m for m in texts if model_of(m) == chairman][:1]
    if not own:
        return None  # the chairman's model is not a member, or it failed: deliberate
    return Stands(own, "select", "no majority; the chairman's model's own answer stands")


def _synthesize(texts: Texts, standing: Standing, close_margin: float) -> Pick:
    return Pick("synthesize")


def _select(texts: Texts, standing: Standing, close_margin: float) -> Pick:
    return Pick("select", standing.order[0])


def _vote(texts: Texts, standing: Standing, close_margin: float) -> Pick:
    return Pick("vote", extract.vote({m: texts[m] for m in standing.order}, standing.order))


def _close(texts: Texts, standing: Standing, close_margin: float) -> Pick:
    lead = standing.lead(texts)
    close = len(standing.order) > 1 and lead is not None and lead < close_margin
    return Pick("synthesize") if close else _select(texts, standing, close_margin)


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    _stands: Callable[[Texts, str], Stands | None]
    _concludes: Callable[[Texts, Standing, float], Pick]
    close_margin: float = 0.5
    """For ``close``: a lead under this (in normalized score) counts as close."""
    staged: bool = False
    """Ask the first sample of each model and method first, the further samples only
    when no answer stands on those (``first_wave``)."""

    def stands(self, texts: Texts, chairman: str) -> Stands | None:
        """After the opinions: the answer that stands without reviews, if any."""
        return self._stands(texts, chairman)

    def concludes(self, texts: Texts, standing: Standing) -> Pick:
        """After the ranking: who writes the final answer."""
        return self._concludes(texts, standing, self.close_margin)

    @property
    def always_reviews(self) -> bool:
        return self._stands is _never

    @property
    def majority_decides(self) -> bool:
        """A majority's answer stands: once a majority of all the members agrees, the
        opinions still out cannot change the answer."""
        return self._stands in (_majority, _majority_or_chairman)

    def settled(self, texts: Texts, pending: list[str]) -> bool:
        """Whether the opinions still out cannot change what stands: a majority of
        all the members agrees already (for the strategies a majority decides)."""
        if not pending or not self.majority_decides:
            return False
        return bool(extract.majority({**texts, **dict.fromkeys(pending, "")}))


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(
            "deliberate",
            "all members agree: their answer stands; else reviews and the chairman's synthesis",
            _unanimous,
            _synthesize,
        ),
        Strategy("synthesize", "every stage, always", _never, _synthesize),
        Strategy(
            "majority-then-synthesize",
            "a majority's answer stands; else reviews and the chairman's synthesis",
            _majority,
            _synthesize,
        ),
        Strategy(
            "majority-or-chairman",
            "a majority's answer stands; else the chairman's model's own opinion (no reviews)",
            _majority_or_chairman,
            _synthesize,
        ),
        Strategy(
            "across-methods",
            "the first sample of each method first: an answer members of different methods "
            "agree on stands; else the further samples, and the answer most members gave "
            "(a tie to the one more gave in words); reviews only when none concluded",
            _across_methods,
            _close,
            staged=True,
        ),
        Strategy("select", "reviews; the top-ranked opinion", _never, _select),
        Strategy("vote", "reviews; the answer most members gave, ties by rank", _never, _vote),
        Strategy(
            "close",
            "reviews; the chairman synthesizes only when the ranking is close (between "
            "different answers)",
            _never,
            _close,
        ),
    )
}

DEFAULT = "majority-then-synthesize"
"""A majority's answer stands (settled as soon as a majority of all the members
agrees); without one, the seed's reviews and synthesis run. With three samples of
the 1.5B it answered 87.5% of the 160 development questions at 2.4x the 1.5B alone
(docs/quality.md); `majority-or-chairman`, the default before, skips the reviews
and the synthesis altogether."""


class UnknownStrategy(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"strategy {name!r}: choose one of {', '.join(STRATEGIES)}")


def named(name: str, *, close_margin: float = 0.5) -> Strategy:
    try:
        strategy = STRATEGIES[name]
    except KeyError:
        raise UnknownStrategy(name) from None
    return dataclasses.replace(strategy, close_margin=close_margin)
