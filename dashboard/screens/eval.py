"""Eval: the reports `council eval` saved, read as the report they are (``bus.reports``;
an older report lacks what it did not measure)."""

from __future__ import annotations

from calendar import timegm
from pathlib import Path
from time import strptime
from typing import Any

import msgspec
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from council.bus.reports import Report, SystemRow
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


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def recorded_at(report: Report, mtime: float) -> float:
    """The report's own date (UTC), else the file's modification time."""
    try:
        return float(timegm(strptime(report.date, "%Y-%m-%d %H:%M UTC")))
    except ValueError:
        return mtime


def load_reports(folder: Path) -> list[tuple[Path, Report]]:
    """Every report in ``folder`` that reads as one, newest first; another is a warning."""
    found: list[tuple[float, float, Path, Report]] = []
    for path in sorted(folder.glob("*.report.json")) if folder.is_dir() else []:
        try:
            mtime = path.stat().st_mtime
            report = msgspec.json.decode(path.read_bytes(), type=Report)
        except (OSError, msgspec.DecodeError) as exc:
            st.warning(f"Skipped {path.name}: not an eval report ({exc}).")
            continue
        found.append((recorded_at(report, mtime), mtime, path, report))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [(path, report) for _, _, path, report in found]


def title_of(path: Path, report: Report) -> str:
    stem = path.name.removesuffix(".report.json")
    dataset_stem, _, label_stem = stem.partition("--")
    parts = [report.dataset or dataset_stem, report.label or label_stem or "?"]
    parts.append(report.date or "undated")
    if report.answered is not None or report.questions is not None:
        answered = "?" if report.answered is None else report.answered
        parts.append(f"{answered}/{report.questions or '?'}")
    return " · ".join(parts)


def verdict(
    rows: list[SystemRow], time_ratio: float | None, discrimination: float | None
) -> list[tuple[bool | None, str]]:
    """The targets, each met (True), missed (False) or not measurable (None). The best
    single model is judged at its best when the report has those rows."""
    council = next((r.share for r in rows if "council" in (r.group, r.system)), None)
    group = "best" if any(r.group == "best" for r in rows) else "alone"
    alone = [a for r in rows if r.group == group and (a := r.share) is not None]
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


def systems_frame(rows: list[SystemRow]) -> pd.DataFrame:
    """One row per system as shown, plus the interval's bounds (``_low``, ``_high``)."""
    table = []
    for r in rows:
        share, low, high = r.share, r.low, r.high
        table.append(
            {
                "system": r.system,
                "group": r.group,
                "accuracy %": None if share is None else round(share * 100, 1),
                "95% interval": (
                    f"{low:.1%}–{high:.1%}" if low is not None and high is not None else ""
                ),
                "right/n": f"{r.correct}/{r.n}",
                "tokens/q": None if r.tokens is None else round(r.tokens),
                "s/q": None if r.wall_s is None else round(r.wall_s, 2),
                "× chairman": None if r.vs_chairman is None else round(r.vs_chairman, 1),
                "vs best's opinion": f"+{r.gained}/−{r.lost}" if r.gained is not None else "",
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
if report.machine:
    details.append(f"machine: {report.machine}")
if report.members:
    details.append("members: " + ", ".join(report.members))
if report.chairman:
    details.append(f"chairman: {report.chairman}")
st.caption(" · ".join(details))

if report.systems:
    frame = systems_frame(report.systems)
    st.dataframe(frame.drop(columns=["_low", "_high"]), hide_index=True)
    chart = accuracy_chart(frame)
    if chart is not None:
        st.plotly_chart(chart)
else:
    st.info("This report has no systems.")


def shown(value: object) -> str:
    return "—" if value is None else str(value)


st.subheader("Summary")
discrimination, time_ratio = report.review_discrimination, report.time_vs_chairman
columns = st.columns(5)
columns[0].metric(
    "Review discrimination",
    "—" if discrimination is None else f"{discrimination:+.2f}",
    help="Mean per-reviewer z-score given to right answers minus wrong ones.",
)
columns[1].metric(
    "Synthesis broke / fixed",
    f"{shown(report.synthesis_broke)} / {shown(report.synthesis_fixed)}",
    help="Synthesized answers wrong although the top-ranked opinion was right / the reverse.",
)
columns[2].metric("Fallbacks", shown(report.fallbacks))
columns[3].metric("Council errors", shown(report.council_errors))
columns[4].metric(
    "Time vs chairman alone",
    "—" if time_ratio is None else f"{time_ratio:.1f}×",
    help="The council's mean wall time per question over the chairman's model alone's.",
)
if (versus := report.versus_best) is not None:
    st.caption(
        f"Against {versus.system}: the council was right where it was wrong "
        f"{versus.council_only}×, wrong where it was right {versus.other_only}× "
        f"(sign test p = {versus.p_value:.2f})."
    )
if report.discrimination_by_reviewer:
    st.caption(
        "Discrimination by reviewer: "
        + ", ".join(f"{name} {v:+.2f}" for name, v in report.discrimination_by_reviewer.items())
    )

checks = verdict(report.systems, time_ratio, discrimination)
met = sum(1 for ok, _ in checks if ok)
marks = {True: ":green[**✓**]", False: ":red[**✗**]", None: ":gray[**–**]"}
st.markdown(
    f"**Verdict: {met}/{len(checks)} targets met** — "
    + " · ".join(f"{marks[ok]} {text}" for ok, text in checks)
)
st.caption("On point estimates: where the 95% intervals overlap, a difference is not significant.")

if report.by_kind:
    st.subheader("Accuracy per kind (%)")
    per_kind = []
    for kind, figures in report.by_kind.items():
        entry: dict[str, Any] = {"kind": kind, "questions": int(figures.get("questions", 0))}
        for system, share in figures.items():
            if system != "questions":
                entry[system] = round(share * 100, 1)
        per_kind.append(entry)
    st.dataframe(pd.DataFrame(per_kind), hide_index=True)
