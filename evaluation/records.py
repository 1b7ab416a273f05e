"""What `council eval` saves per question (one JSON line each), read back to make
its report and to replay the chairman's strategies."""

from __future__ import annotations

import msgspec


class Answer(msgspec.Struct, kw_only=True):
    text: str = ""
    correct: bool = False
    """Judged on the answer's conclusion (its final-answer line) when it states one."""
    tokens: int = 0
    """Prompt and completion tokens."""
    wall_s: float = 0.0
    error: str = ""
    conclusion: str = ""
    """What its final-answer line says; "" when it has none (cut off, or unformatted)."""


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
    scores: list[float] = []
    """Each ranked member's score, in ``ranking`` order."""
    stage_s: dict[str, float] = {}
    stage_tokens: dict[str, int] = {}
    strategy: str = ""
    """How the answer was made: synthesize, select or vote."""
    strategy_name: str = ""
    """The strategy the session ran (majority-then-synthesize, ...)."""
    not_needed: list[str] = []
    """Members stopped once a majority of all had agreed: their opinions are unknown."""
    fallback: str = ""
    reviews_skipped: bool = False


class Record(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    council: CouncilAnswer
    alone: dict[str, Answer]
    """Per model: the model asked alone, as the council asks its members."""
    best: dict[str, Answer] = {}
    """Per model: the model alone at its best (greedy, room for its whole working)."""
    versus: CouncilAnswer | None = None
    """Another council on the same question (``council eval --versus``)."""
