"""Eval: the reports `council eval` saved, read as plain JSON (older reports may lack keys)."""

from __future__ import annotations

import json
from calendar import timegm
from pathlib import Path
from time import strptime
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from council.dashboard.common import PALETTE, evals_dir

GROUP_COLOURS = {
    "council": PALETTE[0],
    "best": PALETTE[5],
    "alone": PALETTE[1],
    "replayed": PALETTE[2],
    "stage 1": PALETTE[3],
    "bound": PALETTE[4],
}
TIME_TARGET = 3.0  # the council may take at most this many times the chairman's model alone
DISCRIMINATION_TARGET = 0.5  # reviews must tell right answers from wrong ones this well


def number(value: Any) -> float | None:
    """A JSON number as a float; anything else (missing, null, text) as None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def accuracy(row: dict[str, Any]) -> float | None:
    given = number(row.get("accuracy"))
    if given is not None:
        return given
    correct, n = number(row.get("correct")), number(row.get("n"))
    return correct / n if correct is not None and n else None


def recorded_at(report: dict[str, Any], mtime: float) -> float:
    """The report's own date (UTC), else the file's modification time."""
    try:
        return float(timegm(strptime(str(report.get("date", "")), "%Y-%m-%d %H:%M UTC")))
    except ValueError:
        return mtime


def load_reports(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable report in ``folder``, newest first; a broken one is a warning."""
    found: list[tuple[float, float, Path, dict[str, Any]]] = []
    for path in sorted(folder.glob("*.report.json")) if folder.is_dir() else []:
        try:
            mtime = path.stat().st_mtime
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            st.warning(f"Skipped {path.name}: not a readable JSON report ({exc}).")
            continue
        if not isinstance(report, dict):
            st.warning(f"Skipped {path.name}: not a JSON object.")
            continue
        found.append((recorded_at(report, mtime), mtime, path, report))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [(path, report) for _, _, path, report in found]


def title_of(path: Path, report: dict[str, Any]) -> str:
    stem = path.name.removesuffix(".report.json")
    dataset_stem, _, label_stem = stem.partition("--")
    parts = [
        str(report.get("dataset") or dataset_stem),
        str(report.get("label") or label_stem or "?"),
        str(report.get("date") or "undated"),
    ]
    answered, questions = report.get("answered"), report.get("questions")
    if answered is not None or questions is not None:
        parts.append(f"{answered if answered is not None else '?'}/{questions or '?'}")
    return " · ".join(parts)


def system_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    systems = report.get("systems")
    return [r for r in systems if isinstance(r, dict)] if isinstance(systems, list) else []


def verdict(
    rows: list[dict[str, Any]], time_ratio: float | None, discrimination: float | None
) -> list[tuple[bool | None, str]]:
    """The targets, each met (True), missed (False) or not measurable (None). The best
    single model is judged at its best when the report has those rows."""
    council = next(
        (accuracy(r) for r in rows if r.get("group") == "council" or r.get("system") == "council"),
        None,
    )
    group = "best" if any(r.get("group") == "best" for r in rows) else "alone"
    alone = [a for r in rows if r.get("group") == group and (a := accuracy(r)) is not None]
    target = "council ≥ best single model" + (" at its best" if group == "best" else "")
    checks: list[tuple[bool | None, str]] = []
    if council is None or not alone:
        checks.append((None, f"{target}: not measured"))
    else:
        checks.append(
            (council >= max(alone), f"{target} ({percent(council)} vs {percent(max(alone))})")
        )
    reviews = f"review discrimination ≥ {DISCRIMINATION_TARGET:+.2f}"
    if discrimination is None:
        checks.append((None, f"{reviews}: not measured"))
    else:
        checks.append(
            (discrimination >= DISCRIMINATION_TARGET, f"{reviews} ({discrimination:+.2f})")
        )
    if time_ratio is None:
        checks.append((None, f"time ≤ {TIME_TARGET:.0f}× the chairman's model: not measured"))
    else:
        checks.append(
            (
                time_ratio <= TIME_TARGET,
                f"time ≤ {TIME_TARGET:.0f}× the chairman's model ({time_ratio:.1f}×)",
            )
        )
    return checks


def systems_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per system as shown, plus the interval's bounds (``_low``, ``_high``)."""
    table = []
    for r in rows:
        share, low, high = accuracy(r), number(r.get("low")), number(r.get("high"))
        tokens, wall_s = number(r.get("tokens")), number(r.get("wall_s"))
        ratio = number(r.get("vs_chairman"))
        table.append(
            {
                "system": str(r.get("system", "?")),
                "group": str(r.get("group", "")),
                "accuracy %": None if share is None else round(share * 100, 1),
                "95% interval": (
                    f"{low:.1%}–{high:.1%}" if low is not None and high is not None else ""
                ),
                "right/n": f"{r.get('correct', '?')}/{r.get('n', '?')}",
                "tokens/q": None if tokens is None else round(tokens),
                "s/q": None if wall_s is None else round(wall_s, 2),
                "× chairman": None if ratio is None else round(ratio, 1),
                "vs best's opinion": (
                    f"+{r['gained']}/−{r['lost']}" if r.get("gained") is not None else ""
                ),
                "_low": low,
                "_high": high,
            }
        )
    return pd.DataFrame(table)


def accuracy_chart(frame: pd.DataFrame) -> go.Figure | None:
    """Accuracy per system as horizontal bars, the 95% interval as error bars."""
    plotted = frame[frame["accuracy %"].notna()].copy()
    if plotted.empty:
        return None
    plotted["above"] = [
        0.0 if pd.isna(h) else max(0.0, h * 100 - a)
        for a, h in zip(plotted["accuracy %"], plotted["_high"], strict=True)
    ]
    plotted["below"] = [
        0.0 if pd.isna(lo) else max(0.0, a - lo * 100)
        for a, lo in zip(plotted["accuracy %"], plotted["_low"], strict=True)
    ]
    chart = px.bar(
        plotted, x="accuracy %", y="system", color="group", orientation="h",
        error_x="above", error_x_minus="below", color_discrete_map=GROUP_COLOURS,
        category_orders={"system": list(plotted["system"])},
        title="Accuracy per system (95% interval)",
    )  # fmt: skip
    chart.update_yaxes(title=None)  # px lists the first category on top
    chart.update_xaxes(range=[0, 100])
    chart.update_layout(height=max(300, 40 * len(plotted) + 120))
    return chart


st.title("Eval")
folder = evals_dir()
reports = load_reports(folder)
if not reports:
    st.info(
        f"No eval reports in {folder}. Make one with `council eval evals/dev.jsonl` "
        "(it saves to $COUNCIL_EVALS_DIR, which `council dashboard` reads)."
    )
    st.stop()

titles = {path.name: title_of(path, report) for path, report in reports}
chosen = st.selectbox("Report", list(titles), format_func=titles.__getitem__, key="eval_report")
path, report = next((p, r) for p, r in reports if p.name == chosen)
details = [f"file: {path}"]
if report.get("machine"):
    details.append(f"machine: {report['machine']}")
if isinstance(report.get("members"), list):
    details.append("members: " + ", ".join(str(m) for m in report["members"]))
if report.get("chairman"):
    details.append(f"chairman: {report['chairman']}")
st.caption(" · ".join(details))

rows = system_rows(report)
if rows:
    frame = systems_frame(rows)
    st.dataframe(frame.drop(columns=["_low", "_high"]), hide_index=True)
    chart = accuracy_chart(frame)
    if chart is not None:
        st.plotly_chart(chart)
else:
    st.info("This report has no systems.")

st.subheader("Summary")
discrimination = number(report.get("review_discrimination"))
time_ratio = number(report.get("time_vs_chairman"))
columns = st.columns(5)
columns[0].metric(
    "Review discrimination",
    "—" if discrimination is None else f"{discrimination:+.2f}",
    help="Mean per-reviewer z-score given to right answers minus wrong ones.",
)
columns[1].metric(
    "Synthesis broke / fixed",
    f"{report.get('synthesis_broke', '—')} / {report.get('synthesis_fixed', '—')}",
    help="Synthesized answers wrong although the top-ranked opinion was right / the reverse.",
)
columns[2].metric("Fallbacks", str(report.get("fallbacks", "—")))
columns[3].metric("Council errors", str(report.get("council_errors", "—")))
columns[4].metric(
    "Time vs chairman alone",
    "—" if time_ratio is None else f"{time_ratio:.1f}×",
    help="The council's mean wall time per question over the chairman's model alone's.",
)
versus = report.get("versus_best")
if isinstance(versus, dict) and versus.get("system"):
    st.caption(
        f"Against {versus['system']}: the council was right where it was wrong "
        f"{versus.get('council_only', '—')}×, wrong where it was right "
        f"{versus.get('other_only', '—')}× (sign test p = {versus.get('p_value', '—')})."
    )
by_reviewer = report.get("discrimination_by_reviewer")
if isinstance(by_reviewer, dict) and by_reviewer:
    st.caption(
        "Discrimination by reviewer: "
        + ", ".join(
            f"{name} {value:+.2f}" if (value := number(v)) is not None else f"{name} —"
            for name, v in by_reviewer.items()
        )
    )

checks = verdict(rows, time_ratio, discrimination)
met = sum(1 for ok, _ in checks if ok)
marks = {True: ":green[**✓**]", False: ":red[**✗**]", None: ":gray[**–**]"}
st.markdown(
    f"**Verdict: {met}/{len(checks)} targets met** — "
    + " · ".join(f"{marks[ok]} {text}" for ok, text in checks)
)
st.caption("On point estimates: where the 95% intervals overlap, a difference is not significant.")

kinds = report.get("by_kind")
if isinstance(kinds, dict) and kinds:
    st.subheader("Accuracy per kind (%)")
    per_kind = []
    for kind, figures in kinds.items():
        if not isinstance(figures, dict):
            continue
        entry: dict[str, Any] = {"kind": kind}
        questions = number(figures.get("questions"))
        entry["questions"] = None if questions is None else int(questions)
        for system, value in figures.items():
            share = number(value)
            if system != "questions":
                entry[system] = None if share is None else round(share * 100, 1)
        per_kind.append(entry)
    st.dataframe(pd.DataFrame(per_kind), hide_index=True)
