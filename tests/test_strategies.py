"""Reading an answer's conclusion, member specs with samples, and the strategy registry
(plain functions, no bus)."""

from __future__ import annotations

import pytest

from council.bus.members import PERSONAS, member_name, method_of, sample_of, split_member
from council.chairman import extract
from council.chairman.aggregate import Score, rank
from council.chairman.prompts import PERSONA_PROMPTS
from council.chairman.strategies import STRATEGIES, Pick, Standing, UnknownStrategy, named


@pytest.mark.parametrize(
    ("text", "stated"),
    [
        ("48 / 2 = 24 in May.\n48 + 24 = 72\nFinal answer: 72", "72"),
        ("Working.\n**Final Answer:** $18.", "18"),
        ("So the final answer is $\\boxed{5,000}$.", "5,000"),
        ("Final answer: Bob.\nActually, no.\nFinal answer: Ann", "Ann"),
        ("The capital of France is Paris.", ""),
        ("", ""),
    ],
)
def test_the_conclusion_is_the_last_final_answer_line(text: str, stated: str) -> None:
    assert extract.conclusion(text) == stated


def test_agreement_reads_the_conclusion_not_the_numbers_in_the_working() -> None:
    """Two workings full of different numbers that conclude alike agree; an answer
    with no final-answer line falls back to its last number."""
    a = "12 * 3 = 36, minus 4 is 32.\nFinal answer: 32"
    b = "4 less than 36 (3 dozen) is 32 apples.\nFinal answer: 32 apples"
    c = "I get 36 - 4 = 30"
    assert extract.extract(a) == extract.extract(b) == "32"
    assert extract.extract(c) == "30"
    assert extract.unanimous({"x": a, "y": b}) == ["x", "y"]
    assert extract.unanimous({"x": a, "y": b, "z": c}) == []
    assert extract.majority({"x": a, "y": b, "z": c}) == ["x", "y"]
    assert extract.checked_text(a) == "32"
    assert extract.checked_text(c) == c


def test_a_member_spec_names_model_persona_and_sample() -> None:
    assert split_member("qwen2.5:0.5b@careful#2") == ("qwen2.5:0.5b", "careful")
    assert split_member("m#3") == ("m", "")
    assert (sample_of("m#3"), sample_of("m"), sample_of("m@skeptic")) == (3, 1, 1)
    assert split_member("odd#name") == ("odd#name", "")  # not a sample number
    assert sample_of("m#0") == 1


def test_a_member_name_is_written_as_it_is_read() -> None:
    """``member_name`` composes what the readers split, and every persona a name may
    carry has the chairman's words for it."""
    name = member_name("qwen2.5:1.5b", persona="skeptic", method="code", sample=2)
    assert name == "qwen2.5:1.5b@skeptic+code#2"
    assert (split_member(name), method_of(name), sample_of(name)) == (
        ("qwen2.5:1.5b", "skeptic"), "code", 2
    )  # fmt: skip
    assert member_name("m") == "m"
    assert set(PERSONA_PROMPTS) == {"", *PERSONAS}


def test_each_strategy_decides_from_the_answers_and_the_ranking() -> None:
    """Three different answers: only the strategies that may stand without reviews do,
    and only majority-or-chairman, on the chairman's model's member; after the
    ranking, each picks as its summary says."""
    texts = {"big": "Final answer: 7", "small": "Final answer: 6", "tiny": "Final answer: 6"}
    split = {"big": "Final answer: 7", "small": "Final answer: 6", "tiny": "Final answer: 5"}
    stands = {name: s.stands(split, "big") for name, s in STRATEGIES.items()}
    assert {n for n, s in stands.items() if s} == {"majority-or-chairman"}
    assert stands["majority-or-chairman"].members == ["big"]  # type: ignore[union-attr]
    majority = STRATEGIES["majority-then-synthesize"].stands(texts, "big")
    assert majority is not None
    assert (majority.members, majority.how) == (["small", "tiny"], "vote")
    assert "2 of 3 members answered 6" in majority.reason
    assert STRATEGIES["deliberate"].stands(texts, "big") is None
    alike = {m: "Final answer: 6" for m in texts}
    assert STRATEGIES["deliberate"].stands(alike, "big").reason == "all 3 members answered 6"  # type: ignore[union-attr]

    ranked = Standing(["big", "small", "tiny"], margin=0.2)
    assert STRATEGIES["select"].concludes(texts, ranked).member == "big"
    assert STRATEGIES["vote"].concludes(texts, ranked).member == "small"
    assert STRATEGIES["deliberate"].concludes(texts, ranked).how == "synthesize"
    assert named("close", close_margin=0.1).concludes(texts, ranked).how == "select"
    assert named("close", close_margin=0.5).concludes(texts, ranked).how == "synthesize"
    with pytest.raises(UnknownStrategy, match="choose one of deliberate"):
        named("nope")


def test_a_close_call_is_between_different_answers() -> None:
    """Members that gave one answer are no contest to each other: two programs that
    printed 87 ranked first and second leave no close call, and the top one stands;
    a small lead over a different answer is close, and the chairman synthesizes."""
    texts = {"a+code": "Final answer: 87", "b+code": "Final answer: 87.0", "c": "Final answer: 8"}
    close = named("close", close_margin=0.5)
    shared = Standing(["a+code", "b+code", "c"], margin=0.0, tied=True, scores=[1.2, 1.2, -1.0])
    assert shared.lead(texts) == pytest.approx(2.2)
    assert close.concludes(texts, shared) == Pick("select", "a+code")
    assert STRATEGIES["across-methods"].concludes(texts, shared) == Pick("select", "a+code")
    contested = Standing(["a+code", "c", "b+code"], margin=0.1, scores=[1.2, 1.1, 1.0])
    assert close.concludes(texts, contested).how == "synthesize"
    alike = {m: "Final answer: 87" for m in texts}
    assert shared.lead(alike) is None
    assert close.concludes(alike, shared).how == "select"
    recorded = Standing(["a+code", "b+code", "c"], margin=0.0, tied=True)  # an older record
    assert close.concludes(texts, recorded).how == "synthesize"


def test_a_majority_of_all_the_members_settles_before_the_rest_have_answered() -> None:
    """Two of three agreeing settle a strategy a majority decides (the third cannot
    change it); two of five do not, and a strategy that reviews or needs unanimity
    never settles early."""
    agree = {"a": "Final answer: 4", "b": "so 4"}
    for name in ("majority-then-synthesize", "majority-or-chairman"):
        assert STRATEGIES[name].settled(agree, ["c"])
        assert not STRATEGIES[name].settled(agree, ["c", "d", "e"])
        assert not STRATEGIES[name].settled({"a": "4", "b": "5"}, ["c"])
        assert not STRATEGIES[name].settled({**agree, "c": "4"}, [])
    for name in ("deliberate", "synthesize", "select", "vote", "close"):
        assert not STRATEGIES[name].settled(agree, ["c"])


def test_a_reviewer_of_weight_zero_counts_for_nothing_in_the_ranking() -> None:
    """The liar ranks b first, the others rank a first: with the liar at weight 0, a
    leads; with every weight 1, the liar's strong opinion ties them."""
    given = {"r1": {"a": 9, "b": 5}, "r2": {"a": 8, "b": 7}, "liar": {"a": 1, "b": 10}}

    def scores(liar_weight: float) -> list[Score]:
        return [
            Score(reviewer, reviewed, score, liar_weight if reviewer == "liar" else 1.0)
            for reviewer, by in given.items()
            for reviewed, score in by.items()
        ]

    labels = {"a": "Response A", "b": "Response B"}
    weighted, _, _ = rank(["a", "b"], labels, scores(0.0), seed=1)
    assert weighted[0].member == "a"
    assert weighted[0].margin > 1.0
    plain, ties, _ = rank(["a", "b"], labels, scores(1.0), seed=1)
    assert plain[0].score < weighted[0].score


def test_a_final_answer_announced_on_one_line_and_given_on_the_next_is_read() -> None:
    text = "7 × 8 = 56\nTherefore, the final answer is:\nFinal answer: 7"
    assert extract.conclusion(text) == "7"
    assert extract.conclusion("The final answer is:\n\n**42**") == ""


def test_a_boxed_answer_with_braces_inside_is_read_whole() -> None:
    assert extract.conclusion("So \\(\\boxed{\\frac{3}{16}}\\)") == "\\frac{3}{16}"
    assert extract.conclusion("Final answer: \\(42\\)") == "42"
