"""`council eval`: checkers, the report's arithmetic, and a run on a real model."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from conftest import TEST_MODEL, council_cli

from council.chairman.extract import checked_text, conclusion
from council.evaluation.questions import Check, EvalFileError, load
from council.evaluation.records import Answer, CouncilAnswer, Record, ReviewScore
from council.evaluation.report import build_report, sign_test, wilson

DEV_SET = Path(__file__).parent.parent / "evals" / "dev.jsonl"


@pytest.mark.parametrize(
    ("check", "answer", "right"),
    [
        (Check(answers=["Canberra"]), "The capital is canberra.", True),
        (Check(answers=["Canberra"]), "Sydney", False),
        (Check(regex=r"\bBob\b"), "It is bob, clearly.", True),
        (Check(regex=r"\bBob\b"), "Bobby", False),
        (Check(number=42), "6 times 7 is 42.", True),
        (Check(number=42), "42 is wrong, it is 41", False),
        (Check(number=1500), "That makes 1,500 apples.", True),
        (Check(number=98.6, tolerance=0.05), "About 98.6 °F", True),
        (Check(number=98.6, tolerance=0.05), "About 98.7 °F", False),
        (Check(number=3), "no number here", False),
    ],
)
def test_each_checker_on_known_answers(check: Check, answer: str, right: bool) -> None:
    assert check.accepts(answer) is right


def test_an_eval_file_with_a_bad_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = '{"id": "a", "question": "q", "check": {"number": 1}}'
    for bad in (
        '{"id": "b", "question": "q", "check": {"number": 1, "regex": "x"}}',
        '{"id": "a", "question": "q", "check": {"number": 1}}',
        '{"id": "b", "question": "q", "check": {"regex": "("}}',
        "not json",
    ):
        path.write_text(f"{good}\n{bad}\n")
        with pytest.raises(EvalFileError, match="bad.jsonl:2"):
            load(path)


def test_the_development_set_loads_with_at_least_150_questions_of_several_kinds() -> None:
    questions = load(DEV_SET)
    kinds = {q.kind for q in questions}
    assert len(questions) >= 150
    assert {"gsm8k", "arithmetic", "facts", "units", "logic", "code"} <= kinds


def test_every_development_question_accepts_its_answer_and_refuses_a_non_answer() -> None:
    """For each line, a model-like reply carrying the true answer passes its checker
    and one without it fails (a regex check is tried on the word it looks for)."""
    for q in load(DEV_SET):
        check = q.check
        if check.number is not None:
            right = f"So the answer is {check.number:g}."
            assert not check.accepts(f"So the answer is {check.number + 1 + check.tolerance:g}.")
        elif check.answers is not None:
            right = f"I believe it is {check.answers[0]}."
        else:
            assert check.regex is not None
            word = check.regex.removeprefix(r"\b").removesuffix(r"\b").split("|")[0]
            right = f"I believe it is {word.strip('()?:')}."
        assert check.accepts(right), (q.id, right)
        assert not check.accepts("I don't know."), q.id


def test_wilson_interval_contains_the_rate_and_narrows_with_n() -> None:
    assert wilson(0, 0) == (0.0, 0.0)
    low, high = wilson(5, 10)
    assert low < 0.5 < high
    assert wilson(50, 100)[1] - wilson(50, 100)[0] < high - low
    assert wilson(10, 10)[1] == 1.0


def test_report_counts_selection_oracle_and_synthesis_flips() -> None:
    """Two questions: the council's top-ranked opinion is right in one, the final
    answer in the other; the report's figures follow from the records alone."""

    def record(qid: str, top_right: bool, final_right: bool) -> Record:
        opinions = {
            "a": Answer(text="1", correct=top_right, tokens=10, wall_s=1.0),
            "b": Answer(text="2", correct=False, tokens=10, wall_s=1.0),
        }
        council = CouncilAnswer(
            text="x", correct=final_right, tokens=100, wall_s=10.0, members=["a", "b"],
            chairman="a", opinions=opinions, ranking=["a", "b"], margin=1.0,
            stage_s={"opinions": 1.0, "reviews": 6.0, "synthesis": 3.0, "total": 10.0},
            stage_tokens={"opinions": 20, "reviews": 60, "synthesis": 20, "total": 100},
            strategy="synthesize",
        )  # fmt: skip
        alone = {"a": Answer(correct=top_right, tokens=10, wall_s=2.0)}
        return Record(id=qid, kind="k", council=council, alone=alone)

    report = build_report(
        [record("q1", True, False), record("q2", False, True)], dataset="d", label="l", total=2
    )
    rows = {r.system: r for r in report.systems}
    assert rows["council"].correct == 1
    assert rows["a alone (chairman)"].correct == 1
    assert rows["council: select"].correct == 1
    assert rows["council: select"].wall_s == 7.0
    assert rows["council: select"].vs_chairman == 3.5
    assert rows["oracle: any member right"].correct == 1
    assert rows["members' mean (stage 1)"].n == 4
    assert (report.synthesis_broke, report.synthesis_fixed) == (1, 1)
    assert report.time_vs_chairman == 5.0
    assert report.by_kind["k"]["council"] == 0.5


def test_sign_test_is_exact_and_two_sided() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(3, 3) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(0, 5) == sign_test(5, 0)
    assert sign_test(10, 5) == pytest.approx(0.3018, abs=1e-4)


def council_record(qid: str, texts: dict[str, str], right: str, scores: dict[str, float]) -> Record:
    """Every member reviews every other; each gives ``scores`` except "noisy", which
    gives the opposite (11 - score); the chairman's model is "big"."""
    opinions = {
        m: Answer(text=t, correct=t == right, tokens=5, wall_s=1.0) for m, t in texts.items()
    }
    reviews = [
        ReviewScore(
            reviewer=reviewer,
            reviewed=reviewed,
            score=11 - scores[reviewed] if reviewer == "noisy" else scores[reviewed],
        )
        for reviewer in texts
        for reviewed in texts
        if reviewer != reviewed
    ]
    council = CouncilAnswer(
        text=texts["big"], correct=texts["big"] == right, tokens=50, wall_s=9.0,
        members=list(texts), chairman="big", opinions=opinions, reviews=reviews,
        ranking=sorted(texts, key=lambda m: -scores[m]), margin=1.0,
        stage_s={"opinions": 2.0, "reviews": 5.0, "synthesis": 2.0, "total": 9.0},
        strategy="synthesize",
    )  # fmt: skip
    alone = {m: Answer(text=t, correct=t == right, wall_s=1.0) for m, t in texts.items()}
    return Record(id=qid, kind="k", council=council, alone=alone)


def test_report_replays_trusting_the_chairman_and_pairs_with_the_best_model() -> None:
    """q1: two members agree on a wrong answer; q2, q3: all differ and only the
    chairman's model is right."""
    split = {"big": 9, "small": 5, "noisy": 1}
    records = [
        council_record("q1", {"big": "7", "small": "5", "noisy": "5"}, "7", {**split, "big": 3}),
        council_record("q2", {"big": "7", "small": "6", "noisy": "5"}, "7", split),
        council_record("q3", {"big": "8", "small": "6", "noisy": "5"}, "8", split),
    ]
    report = build_report(records, dataset="d", label="l", total=3)
    rows = {r.system: r for r in report.systems}
    trusted = rows["council: majority-or-chairman"]
    assert (trusted.correct, trusted.wall_s) == (2, 2.0)
    # big's own opinion was right in all three: q1's majority lost one, gained none
    assert (trusted.gained, trusted.lost) == (0, 1)
    assert (rows["council"].gained, rows["council"].lost) == (0, 0)
    assert rows["big alone (chairman)"].gained is None
    assert (rows["big in stage 1"].correct, rows["small in stage 1"].correct) == (3, 0)
    assert rows["council: deliberate"].correct == 3  # never unanimous: the recorded synthesis
    assert rows["council: majority-then-synthesize"].correct == 2
    assert report.versus_best is not None
    assert report.versus_best.system == "big alone (chairman)"
    assert (report.versus_best.council_only, report.versus_best.other_only) == (0, 0)


def test_a_reviewer_that_contradicts_the_others_is_calibrated_to_weight_zero() -> None:
    """The "noisy" reviewer scores the right answer lowest: its discrimination is negative, so the
    calibration the chairman reads gives it weight 0 and the honest reviewers more."""
    texts = {"big": "1", "a": "2", "b": "3", "noisy": "4"}
    records = [
        council_record(f"q{i}", texts, texts[right], {m: 9 if m == right else 3 for m in texts})
        for i, right in enumerate(["big", "a", "b", "big", "a", "b"])
    ]
    report = build_report(records, dataset="d", label="l", total=6)
    assert report.calibration is not None
    weights = report.calibration.weights
    assert weights["noisy"] == 0.0
    assert min(weights[r] for r in ("big", "a", "b")) > 0.5


def test_the_best_model_is_judged_at_its_best_and_a_replay_reads_what_was_recorded() -> None:
    """Each model alone at its best has its own row and is the baseline the council is
    paired with; a strategy whose reviews a session skipped is not replayed on it."""
    scores = {"big": 9, "small": 5, "noisy": 1}
    records = [
        council_record("q1", {"big": "7", "small": "6", "noisy": "5"}, "7", scores),
        council_record("q2", {"big": "7", "small": "7", "noisy": "7"}, "7", scores),
    ]
    skipped = records[1].council
    skipped.reviews, skipped.reviews_skipped, skipped.strategy = [], True, "vote"
    for r in records:
        r.best = {"big": Answer(text="7", correct=r.id == "q2", wall_s=3.0)}
        r.council.conclusion = "7"
    report = build_report(records, dataset="d", label="l", total=2)
    rows = {r.system: r for r in report.systems}
    assert rows["big at its best (chairman)"].correct == 1
    assert rows["big at its best (chairman)"].group == "best"
    assert report.versus_best is not None
    assert report.versus_best.system == "big at its best (chairman)"
    assert (report.versus_best.council_only, report.versus_best.other_only) == (1, 0)
    assert rows["council: deliberate"].n == 2  # q2 unanimous: read from the opinions
    assert rows["council: select"].n == 1  # q2 skipped its reviews: select cannot be read
    assert report.concluded == {"big": 0.0, "small": 0.0, "noisy": 0.0}


def test_a_session_a_majority_settled_early_is_replayed_only_by_majority_strategies() -> None:
    """With the third opinion stopped as not needed, a strategy that would have
    waited for it (deliberate, select, ...) cannot be replayed on the session."""
    record = council_record("q1", {"big": "7", "small": "7"}, "7", {"big": 9, "small": 5})
    record.council.members.append("noisy")
    record.council.not_needed = ["noisy"]
    record.council.reviews, record.council.reviews_skipped = [], True
    rows = {r.system: r for r in build_report([record], dataset="d", label="l", total=1).systems}
    assert rows["council: majority-then-synthesize"].correct == 1
    assert rows["council: majority-or-chairman"].correct == 1
    assert "council: deliberate" not in rows


def test_a_staged_strategy_is_replayed_on_its_first_wave() -> None:
    """``across-methods`` asks the first sample of each method first: on a session
    whose first wave stood (the rest stopped as not needed) it is replayed at the
    recorded cost; where the recorded session asked everyone but its first wave
    agrees, at the first wave's own tokens and its slower member's seconds."""
    texts = {"big": "7", "big+code": "7", "big#2": "6"}
    stopped = council_record("q1", texts, "7", {"big": 9, "big+code": 5, "big#2": 1})
    stopped.council.opinions.pop("big#2")
    stopped.council.not_needed = ["big#2"]
    stopped.council.reviews, stopped.council.reviews_skipped = [], True
    asked = council_record("q2", texts, "7", {"big": 9, "big+code": 5, "big#2": 1})
    asked.council.opinions["big+code"].wall_s = 1.5
    rows = {
        r.system: r for r in build_report([stopped, asked], dataset="d", label="l", total=2).systems
    }
    replayed = rows["council: across-methods"]
    assert (replayed.n, replayed.correct) == (2, 2)
    assert replayed.wall_s == (2.0 + 1.5) / 2  # the recorded stage, then the slower member
    assert replayed.tokens == (0 + 10) / 2  # no stage tokens recorded; two opinions of 5
    assert "council: deliberate" in rows  # q2: every member answered


def test_another_council_in_the_same_run_has_its_row_and_is_paired_with_the_council() -> None:
    """``--versus``: the other council's answers make their own row and their own
    paired comparison, per question, beside the council's."""
    scores = {"big": 9, "small": 5, "noisy": 1}
    records = [
        council_record(f"q{i}", {"big": "7", "small": "6", "noisy": "5"}, "7", scores)
        for i in range(4)
    ]
    for i, r in enumerate(records):  # the other council: right on q0 only
        r.versus = CouncilAnswer(
            text="7" if i == 0 else "6", correct=i == 0, wall_s=2.0, tokens=10,
            members=["big", "small"], chairman="big", strategy_name="majority-or-chairman",
        )  # fmt: skip
    records[1].council.correct = False
    report = build_report(records, dataset="d", label="l", total=4)
    rows = {r.system: r for r in report.systems}
    other = rows["other council: majority-or-chairman (big, small)"]
    assert (other.correct, other.n, other.group, other.wall_s) == (1, 4, "council", 2.0)
    assert rows["council"].correct == 3
    assert report.versus_other is not None
    assert (report.versus_other.council_only, report.versus_other.other_only) == (2, 0)
    assert report.by_kind["k"]["other council"] == 0.25
    assert any(line.startswith("council against other council") for line in report.notes())


def test_council_eval_on_a_real_model_records_resumes_and_reports(
    council_processes: dict[str, str], tmp_path: Path
) -> None:
    """Two questions through the bus on the real test council: every record's
    verdict matches its checker, the counts add up, a rerun asks nothing again, and
    none of its questions is listed among the asker's conversations."""
    questions = tmp_path / "mini.jsonl"
    lines = [
        {"id": "n", "kind": "arithmetic", "question": "What is 2 + 2?", "check": {"number": 4}},
        {"id": "r", "kind": "facts", "question": "What colour is the sky on a clear day?",
         "check": {"regex": r"\bblue\b"}},
    ]  # fmt: skip
    questions.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    env = {**council_processes, "COUNCIL_EVALS_DIR": str(tmp_path / "evals")}

    versus = [
        "--versus",
        f"{TEST_MODEL},{TEST_MODEL}#2",
        "--versus-strategy",
        "majority-or-chairman",
    ]
    listed_before = council_cli(env, ["conversations"]).stdout
    first = council_cli(
        env,
        ["eval", str(questions), "--json", "--name", "t", "--best-tokens", "128", *versus],
        timeout_s=900,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    report = json.loads(first.stdout)
    assert (report["questions"], report["answered"]) == (2, 2)
    rows = {r["system"]: r for r in report["systems"]}
    assert set(rows) >= {
        "council",
        "smollm2-135m at its best (chairman)",
        "smollm2-135m alone (chairman)",
        "smollm2-135m+code at its best",
        "oracle: any member right",
    }
    for row in rows.values():
        assert 0 <= row["correct"] <= row["n"] <= 6
        assert row["low"] <= row["accuracy"] <= row["high"]
    assert rows["council"]["n"] == 2
    other = f"other council: majority-or-chairman ({TEST_MODEL}, {TEST_MODEL}#2)"
    assert rows[other]["n"] == 2

    saved = (tmp_path / "evals" / "mini--t.jsonl").read_bytes().splitlines()
    records = [msgspec.json.decode(line, type=Record) for line in saved]
    checks = {q.id: q.check for q in load(questions)}
    assert [r.id for r in records] == ["n", "r"]
    for r in records:
        assert r.council.correct == checks[r.id].accepts(checked_text(r.council.text))
        assert len(r.council.opinions) == 3
        for answer in (r.alone["smollm2-135m"], r.best["smollm2-135m"]):
            assert answer.text
            assert answer.correct == checks[r.id].accepts(checked_text(answer.text))
            assert answer.conclusion == conclusion(answer.text)
        with_tool = r.best["smollm2-135m+code"]  # its programs ran in `council tools`
        assert with_tool.text or "program_failed" in with_tool.error, with_tool.error
        assert "tool_unavailable" not in with_tool.error
        assert with_tool.correct == checks[r.id].accepts(checked_text(with_tool.text))
        assert r.versus is not None
        assert r.versus.members == [TEST_MODEL, f"{TEST_MODEL}#2"]
        assert r.versus.strategy_name == "majority-or-chairman"
        assert r.versus.correct == checks[r.id].accepts(checked_text(r.versus.text))
        assert not r.versus.reviews  # that strategy never reviews
    assert rows["council"]["correct"] == sum(r.council.correct for r in records)
    assert rows[other]["correct"] == sum(r.versus.correct for r in records if r.versus)
    assert report["versus_other"]["council_only"] == sum(
        r.council.correct and not r.versus.correct for r in records if r.versus
    )

    again = council_cli(
        env,
        ["eval", str(questions), "--json", "--name", "t", "--best-tokens", "128", *versus],
        timeout_s=120,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "2 already" in again.stderr
    assert (tmp_path / "evals" / "mini--t.jsonl").read_bytes().splitlines() == saved
    assert (tmp_path / "evals" / "mini--t.report.json").exists()
    listed = council_cli(env, ["conversations"]).stdout
    assert "conversation(s)" in listed
    assert listed == listed_before
