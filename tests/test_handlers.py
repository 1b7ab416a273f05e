"""Review parsing: lenient where models are sloppy, strict where it matters."""

from __future__ import annotations

import pytest

from council.agents.handlers import InvalidOutput, parse_verdict, review_schema
from council.bus.messages import ReviewRequest

PAIRWISE = ReviewRequest(session_id="s", member="m", model="m", messages=[], labels=["Response A"])
RANK = ReviewRequest(
    session_id="s", member="m", model="m", messages=[], mode="rank",
    labels=["Response A", "Response B", "Response C"],
)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "score", "justification"),
    [
        ('{"score": 7, "justification": "fine"}', 7.0, "fine"),
        ('{"score": 56, "justification": "x"}', 10.0, "x"),  # bounds are not enforced: clamp
        ('{"score": 0, "justification": "x"}', 1.0, "x"),
        (
            'Sure! {"score": 4, "justification": "line one\nline two"} Done.',
            4.0,
            "line one line two",
        ),
        (
            '{"score": 8, "justification": "cut off by the token cap',
            8.0,
            "cut off by the token cap",
        ),
    ],
)
def test_pairwise_verdicts_parse_leniently(text: str, score: float, justification: str) -> None:
    """Prose around the JSON, raw newlines, out-of-range and truncated scores all parse."""
    scores, reason = parse_verdict(text, PAIRWISE)
    assert scores == {"Response A": score}
    assert reason == justification


@pytest.mark.parametrize("text", ["nonsense", '{"justification": "no score"}', '{"score": "high"}'])
def test_unusable_pairwise_verdict_raises_invalid_output(text: str) -> None:
    """No score to be found: InvalidOutput (which triggers the one repair round)."""
    with pytest.raises(InvalidOutput):
        parse_verdict(text, PAIRWISE)


def test_rank_verdict_becomes_scores_best_first() -> None:
    """A full ranking maps to 10 … 1 spread evenly over the ranked labels."""
    text = '{"ranking": ["Response B", "Response C", "Response A"], "justification": "j"}'
    scores, _ = parse_verdict(text, RANK)
    assert scores == {"Response B": 10.0, "Response C": 5.5, "Response A": 1.0}


@pytest.mark.parametrize(
    "text",
    [
        '{"ranking": ["Response B", "Response A"], "justification": "j"}',
        '{"ranking": ["Response B", "Response B", "Response A"], "justification": "j"}',
        '{"ranking": ["Response Z", "Response B", "Response A"], "justification": "j"}',
    ],
)
def test_rank_verdict_must_rank_every_label_once(text: str) -> None:
    """A ranking that skips, repeats or invents a label is invalid output."""
    with pytest.raises(InvalidOutput):
        parse_verdict(text, RANK)


def test_review_schema_puts_the_score_first_and_bounds_the_justification() -> None:
    """The score comes before the justification, so a truncated reply still has it."""
    schema = review_schema(PAIRWISE)
    assert list(schema["properties"]) == ["score", "justification"]
    assert schema["properties"]["justification"]["maxLength"] <= 300
    ranked = review_schema(RANK)
    assert ranked["properties"]["ranking"]["items"]["enum"] == RANK.labels


def test_a_check_first_review_asks_for_the_working_before_the_score() -> None:
    """check_first: the justification (room for a few steps) comes first; its verdict
    parses the same way."""
    request = ReviewRequest(
        session_id="s", member="m", model="m", messages=[], labels=["Response A"], check_first=True
    )
    schema = review_schema(request)
    assert list(schema["properties"]) == ["justification", "score"]
    assert schema["properties"]["justification"]["maxLength"] > 240
    text = '{"justification": "48 / 2 = 24; 48 + 24 = 72; it says 120: no", "score": 1}'
    assert parse_verdict(text, request) == (
        {"Response A": 1.0},
        "48 / 2 = 24; 48 + 24 = 72; it says 120: no",
    )
