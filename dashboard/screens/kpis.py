"""KPIs: tokens, latency, quality and agreement per model; totals per stage."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from council.dashboard.common import colour, feed
from council.dashboard.kpis import model_figures, stage_totals

st.title("KPIs")
views = [v for v in feed().sessions() if v.finished]
if not views:
    st.info("No finished sessions yet.")
    st.stop()
labels = {v.session_id: f"{v.question[:50]} · {v.session_id}" for v in views}
chosen = st.multiselect(
    "Sessions", list(labels), default=list(labels), format_func=labels.__getitem__
)
selected = [v for v in views if v.session_id in chosen]
figures = model_figures(selected)
if not figures:
    st.info("Pick at least one session.")
    st.stop()
frame = pd.DataFrame([f.__dict__ for f in figures])
colours = {f.model: colour(f.model) for f in figures}

left, right = st.columns(2)
left.plotly_chart(
    px.pie(frame, names="model", values="tokens", title="Tokens per model",
           color="model", color_discrete_map=colours),
    use_container_width=True,
)  # fmt: skip
right.plotly_chart(
    px.bar(frame, x="model", y="mean_latency_ms", title="Mean latency per call (ms)",
           color="model", color_discrete_map=colours),
    use_container_width=True,
)  # fmt: skip

totals = pd.DataFrame(stage_totals(selected))
if not totals.empty:
    per_stage = (
        totals[totals["stage"] != "total"].groupby("stage", as_index=False).mean(numeric_only=True)
    )
    st.plotly_chart(
        px.bar(per_stage, x="stage", y="wall time s", title="Mean wall time per stage (s)"),
        use_container_width=True,
    )

axes = ["score received", "speed", "success", "tokens", "agreement"]
radar = go.Figure()
top_speed = max(frame["tokens_per_s"].max(), 1e-9)
top_tokens = max(frame["tokens"].max(), 1)
for f in figures:
    values = [
        f.mean_score_received / 10, f.tokens_per_s / top_speed, f.success_rate,
        f.tokens / top_tokens, f.agreement,
    ]  # fmt: skip
    radar.add_trace(
        go.Scatterpolar(r=[*values, values[0]], theta=[*axes, axes[0]], name=f.model,
                        line={"color": colours[f.model]})
    )  # fmt: skip
radar.update_layout(
    title="Per model (each axis scaled to 0–1)", polar={"radialaxis": {"range": [0, 1]}}
)
st.plotly_chart(radar, use_container_width=True)
st.subheader("Per model")
st.dataframe(frame, hide_index=True)
if not totals.empty:
    st.subheader("Session totals per stage")
    st.dataframe(totals, hide_index=True)
