"""The dashboard's Eval page, run by Streamlit's AppTest on saved `council eval` reports.

It needs no bus and no council: it reads the reports in the folder it is given.
The fixture report (tests/data/eval-report.json) came from a scripted runtime,
so its figures are meaningless but its shape is a real report's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

import council.dashboard
from council.dashboard.config import ENV, DashboardConfig

APP = Path(council.dashboard.__file__).parent / "app.py"
REPORT = Path(__file__).parent / "data" / "eval-report.json"
SAVED_AS = "dev--custom-88eeeca9.report.json"


@pytest.fixture
def evals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "evals"
    folder.mkdir()
    monkeypatch.setenv(ENV, DashboardConfig(evals_dir=str(folder)).env()[ENV])
    return folder


def eval_page() -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=30)
    app.switch_page("screens/eval.py")
    app.run()
    assert not app.exception, app.exception
    assert [t.value for t in app.title] == ["Eval"]
    return app


def texts(app: AppTest) -> str:
    return "\n".join([*(m.value for m in app.markdown), *(c.value for c in app.caption)])


def test_eval_page_shows_the_report(evals: Path) -> None:
    """Table with one row per system, the accuracy chart, the summary and the verdict."""
    (evals / SAVED_AS).write_text(REPORT.read_text())
    (evals / "dev--custom-88eeeca9.jsonl").write_text("{}\n")  # the records: not a report
    app = eval_page()
    assert app.selectbox[0].options == ["dev.jsonl · custom-88eeeca9 · 2026-11-29 18:15 UTC · 6/6"]
    table = app.dataframe[0].value
    report = json.loads(REPORT.read_text())
    assert len(table) == len(report["systems"]) == 10
    assert list(table.columns) == [
        "system", "group", "accuracy %", "95% interval", "right/n", "tokens/q", "s/q",
        "× chairman", "vs best's opinion",
    ]  # fmt: skip
    council = table[table["system"] == "council"].iloc[0]
    assert (council["accuracy %"], council["95% interval"], council["right/n"]) == (
        0.0,
        "0.0%–39.0%",
        "0/6",
    )
    assert table[table["system"] == "m1 alone (chairman)"].iloc[0]["accuracy %"] == 16.7
    assert len(app.get("plotly_chart")) == 1
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Review discrimination"] == "+1.06"
    assert metrics["Synthesis broke / fixed"] == "1 / 0"
    assert metrics["Time vs chairman alone"] == "7.1×"
    shown = texts(app)
    assert "m2 +1.09, m3 +1.09" in shown
    assert "Against m1 alone (chairman): the council was right where it was wrong 0×" in shown
    # council 0 % < m1 alone 16.7 %; discrimination +1.06 ≥ +0.5; 7.1× > 3×
    assert "Verdict: 1/3 targets met" in shown
    assert ":red[**✗**] council ≥ best single model (0.0% vs 16.7%)" in shown
    assert ":green[**✓**] review discrimination ≥ +0.50 (+1.06)" in shown
    assert ":red[**✗**] time ≤ 3× the chairman's model (7.1×)" in shown
    kinds = app.dataframe[1].value
    assert list(kinds["kind"]) == ["gsm8k"]
    assert kinds.iloc[0]["questions"] == 6
    assert kinds.iloc[0]["m1"] == 16.7
    assert not app.warning
    assert len(app.markdown) == 1  # the verdict: no stray string shown by Streamlit's magic


def test_eval_page_lists_newest_first_and_reads_an_older_report(evals: Path) -> None:
    """Reports newest first; an older report without the newer keys still shows."""
    (evals / SAVED_AS).write_text(REPORT.read_text())
    old: dict[str, Any] = {
        "dataset": "dev.jsonl",
        "label": "old",
        "date": "2025-01-02 03:04 UTC",
        "systems": [
            {"system": "council", "group": "council", "correct": 3, "n": 4},
            {"system": "m1 alone", "group": "alone", "correct": 2, "n": 4},
        ],
    }
    (evals / "dev--old.report.json").write_text(json.dumps(old))
    app = eval_page()
    assert [o.split(" · ")[1] for o in app.selectbox[0].options] == ["custom-88eeeca9", "old"]
    app.selectbox[0].set_value("dev--old.report.json").run()
    assert not app.exception, app.exception
    table = app.dataframe[0].value
    assert list(table["accuracy %"]) == [75.0, 50.0]
    assert list(table["right/n"]) == ["3/4", "2/4"]
    assert len(app.get("plotly_chart")) == 1
    assert {m.label: m.value for m in app.metric}["Time vs chairman alone"] == "—"
    shown = texts(app)
    assert ":green[**✓**] council ≥ best single model (75.0% vs 50.0%)" in shown
    assert "review discrimination ≥ +0.50: not measured" in shown
    assert len(app.dataframe) == 1  # no per-kind table


@pytest.mark.parametrize("make", [False, True], ids=["missing-dir", "empty-dir"])
def test_eval_page_without_reports_says_how_to_make_one(evals: Path, make: bool) -> None:
    if not make:
        evals.rmdir()
    app = eval_page()
    assert len(app.info) == 1
    assert "council eval evals/dev.jsonl" in app.info[0].value
    assert not app.dataframe


def test_eval_page_warns_about_a_corrupt_report_and_shows_the_rest(evals: Path) -> None:
    (evals / "dev--broken.report.json").write_text('{"dataset": "dev.jsonl", "sys')
    (evals / "dev--list.report.json").write_text("[1, 2]")
    app = eval_page()
    warnings = sorted(w.value for w in app.warning)
    assert len(warnings) == 2
    assert "dev--broken.report.json" in warnings[0]
    assert "dev--list.report.json" in warnings[1]
    assert "council eval evals/dev.jsonl" in app.info[0].value  # nothing else to show

    (evals / SAVED_AS).write_text(REPORT.read_text())
    app = eval_page()
    assert len(app.warning) == 2
    assert len(app.dataframe[0].value) == 10
