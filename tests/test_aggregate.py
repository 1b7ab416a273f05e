"""Aggregation: per-reviewer normalization, ranking, ties, failed members."""

from __future__ import annotations

import pytest

from council.chairman.aggregate import Score, dissent, normalize, rank

LABELS = {"a": "Response A", "b": "Response B", "c": "Response C"}


def test_normalize_makes_blanket_reviewer_count_for_nothing() -> None:
    """A reviewer who gives every answer the same score contributes zeros."""
    scores = [Score("x", "a", 9), Score("x", "b", 9), Score("y", "a", 2), Score("y", "b", 8)]
    normalized = {(s.reviewer, s.reviewed): s.score for s in normalize(scores)}
    assert normalized[("x", "a")] == 0.0
    assert normalized[("x", "b")] == 0.0
    assert normalized[("y", "a")] == pytest.approx(-1.0)
    assert normalized[("y", "b")] == pytest.approx(1.0)


def test_rank_orders_by_normalized_not_raw_scores() -> None:
    """A harsh reviewer's relative preference outweighs a lenient reviewer's flat scores."""
    scores = [
        Score("a", "b", 10), Score("a", "c", 10),  # lenient, tells nothing
        Score("b", "a", 2), Score("b", "c", 6),  # harsh, prefers c
        Score("c", "a", 5), Score("c", "b", 3),  # prefers a
    ]  # fmt: skip
    entries, ties, _ = rank(["a", "b", "c"], LABELS, scores, seed=1)
    by_member = {e.member: e for e in entries}
    assert [e.rank for e in entries] == [1, 2, 3]
    assert by_member["b"].raw_mean == pytest.approx(6.5)
    assert by_member["b"].spread == pytest.approx(3.5)
    assert by_member["a"].reviews == 2
    assert entries[-1].margin == 0.0
    assert all(e.label == LABELS[e.member] for e in entries)
    # c: +1 from b, 0 from a; a: +1 from c, -1 from b; b: 0 from a, -1 from c
    assert [e.member for e in entries] == ["c", "a", "b"]
    assert ties == []
    assert by_member["c"].score == pytest.approx(0.5)
    assert by_member["a"].score == pytest.approx(0.0)
    assert by_member["b"].score == pytest.approx(-0.5)
    assert by_member["c"].margin == pytest.approx(0.5)


def test_ties_are_detected_and_broken_by_the_seed_alone() -> None:
    """Equal scores are flagged tied; the order depends on the seed, not on names or raw means."""
    scores = [Score("a", "b", 5), Score("b", "a", 5)]
    orders = set()
    for seed in range(20):
        entries, ties, rule = rank(["a", "b"], LABELS, scores, seed=seed)
        assert ties == [["a", "b"]]
        assert all(e.tied for e in entries)
        assert str(seed) in rule
        assert entries == rank(["a", "b"], LABELS, scores, seed=seed)[0]
        orders.add(tuple(e.member for e in entries))
    assert orders == {("a", "b"), ("b", "a")}


def test_member_without_reviews_ranks_with_zero_and_is_counted() -> None:
    """A member whose reviewers all failed still appears, with 0 reviews."""
    scores = [Score("a", "b", 8), Score("a", "c", 2)]
    entries, _, _ = rank(["a", "b", "c"], LABELS, scores, seed=0)
    by_member = {e.member: e for e in entries}
    assert by_member["a"].reviews == 0
    assert by_member["a"].score == 0.0
    assert entries[0].member == "b"
    assert entries[-1].member == "c"


def test_failed_members_are_not_ranked() -> None:
    """Only members passed in (those that answered) appear in the ranking."""
    entries, _, _ = rank(["a", "b"], LABELS, [Score("a", "b", 7), Score("b", "a", 3)], seed=0)
    assert {e.member for e in entries} == {"a", "b"}


def test_dissent_names_spread_and_ties() -> None:
    """The chairman is told where reviewers disagreed and which answers tied."""
    scores = [Score("b", "a", 1), Score("c", "a", 9), Score("a", "b", 5), Score("c", "b", 5)]
    entries, _, _ = rank(["a", "b", "c"], LABELS, scores, seed=0)
    lines = dissent(entries)
    assert any("Response A" in line and "disagreed" in line for line in lines)
