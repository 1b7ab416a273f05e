"""How the chairman runs a session: its settings, declared beside the code that reads
them (the conductor and its stages)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from council.bus.tunables import tunable


@dataclass(frozen=True)
class CouncilConfig:
    """How the chairman runs a session: the settings of ``council chairman``."""

    quorum: int = tunable(2, "COUNCIL_QUORUM", "opinions needed for a session to go on")
    opinions_deadline_s: float = tunable(
        180.0, "COUNCIL_OPINIONS_DEADLINE", "stage 1 deadline, s", flag="--opinions-deadline"
    )
    reviews_deadline_s: float = tunable(
        300.0, "COUNCIL_REVIEWS_DEADLINE", "stage 2 deadline, s", flag="--reviews-deadline"
    )
    synthesis_deadline_s: float = tunable(
        240.0, "COUNCIL_SYNTHESIS_DEADLINE", "stage 3 deadline, s", flag="--synthesis-deadline"
    )
    agent_silence_s: float = tunable(
        15.0,
        "COUNCIL_AGENT_SILENCE",
        "seconds without word from an agent before its request is asked of another",
        flag="--agent-silence",
    )
    settle_early: bool = tunable(
        True,
        "COUNCIL_SETTLE_EARLY",
        "stop the opinions still running once a majority of all the members agrees, "
        "when the strategy lets a majority stand (1/0)",
    )
    close_margin: float = tunable(
        0.5, "COUNCIL_CLOSE_MARGIN", "strategy close: a lead under this calls the chairman"
    )
    temperature: float = tunable(
        0.0, "COUNCIL_TEMPERATURE", "sampling temperature of a member's opinion (0: greedy)"
    )
    sample_temperature: float = tunable(
        0.7,
        "COUNCIL_SAMPLE_TEMPERATURE",
        "temperature of a member's further samples (model#2, model#3, ...)",
    )
    review_check_first: bool = tunable(
        False,
        "COUNCIL_REVIEW_CHECK_FIRST",
        "pairwise reviewers work the answer out before their score (1/0)",
    )
    program_rounds: int = tunable(
        3,
        "COUNCIL_PROGRAM_ROUNDS",
        "programs a computing member (MODEL+code) may write per opinion: a failed one goes "
        "back to its model with the error",
    )
    conclude: bool = tunable(
        True,
        "COUNCIL_CONCLUDE",
        "ask a member whose opinion states no final answer for it, in one short turn (1/0)",
    )
    reviewer_weights: str = tunable(
        "",
        "COUNCIL_REVIEWER_WEIGHTS",
        "how much each model's reviews count: model=weight,... or the calibration file "
        "`council eval` writes (0: not asked to review; unnamed: 1)",
    )
    history_tokens: int = tunable(
        1024,
        "COUNCIL_HISTORY_TOKENS",
        "how much of a conversation's earlier turns every stage sees (estimated tokens; "
        "the oldest turns beyond it are left out)",
    )
    document_tokens: int = tunable(
        1536,
        "COUNCIL_DOCUMENT_TOKENS",
        "how much of the files a question and its conversation carry every stage sees "
        "(estimated tokens: a file is cut at the end beyond it, an earlier turn's left "
        "out; within the models' context with the opinions the chairman reads)",
    )
    opinion_max_tokens: int = tunable(
        512,
        "COUNCIL_OPINION_MAX_TOKENS",
        "tokens per opinion (room for the working and the final-answer line)",
    )
    review_max_tokens: int = tunable(160, "COUNCIL_REVIEW_MAX_TOKENS", "tokens per review")
    synthesis_max_tokens: int = tunable(
        512, "COUNCIL_SYNTHESIS_MAX_TOKENS", "tokens of the final answer"
    )
    review_temperature: float = 0.2
    synthesis_temperature: float = 0.3
    conclude_max_tokens: int = 40

    @functools.cached_property
    def weights(self) -> dict[str, float]:
        """Per reviewer model, how much its scores count (its measured discrimination),
        read from ``reviewer_weights``: a model at 0 is not asked to review; a model
        not named counts 1. ValueError says what cannot be read."""
        return reviewer_weights(self.reviewer_weights)


def reviewer_weights(text: str) -> dict[str, float]:
    """``model=weight,...``, or the path of the calibration file `council eval` writes."""
    text = text.strip()
    if not text:
        return {}
    if "=" not in text:
        try:
            weights = json.loads(Path(text).expanduser().read_text())["weights"]
            return {str(model): max(0.0, float(w)) for model, w in weights.items()}
        except (OSError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{text}: not a calibration file ({exc!r})") from None
    pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
    return {model.strip(): max(0.0, float(weight)) for model, weight in pairs}
