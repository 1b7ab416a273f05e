"""Responses: every opinion, the reviewer × reviewed score matrix, every justification."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from council.dashboard.common import badge, feed, pick_session, reviews_table, said

st.title("Responses")
view = pick_session(feed().sessions(), key="responses_session")
if view is not None:
    st.markdown(f"**Question:** {said(view.question)}")
    st.caption(f"status: {view.status}")
    for stage, why in view.reasons.items():
        if why:
            st.caption(f"{stage}: {why}")
    members = view.started.plan.members if view.started else list(view.opinions)
    for member in members:
        with st.container(border=True):
            if member in view.opinions:
                o = view.opinions[member]
                st.markdown(
                    f"{badge(member, o.model)} · {o.label} · {o.usage.completion_tokens} tokens"
                    f" · {o.latency_ms / 1000:.1f} s",
                    unsafe_allow_html=True,
                )
                if o.conclusion:
                    st.markdown(f"**Answer: {said(o.conclusion)}**")
                    with st.expander("Working", expanded=False):
                        st.markdown(said(o.text))
                else:
                    st.caption("no final-answer line (cut off, or the model ignored the format)")
                    st.markdown(said(o.text))
            elif (f := view.failures.get(member)) and f.reason == "not_needed":
                st.caption(f"{member}: not needed ({f.detail})")
            elif f:
                st.error(f"{member} failed in {f.stage}: {f.reason}. {f.detail}")
            else:
                st.caption(f"{member}: no answer yet")

    matrix = view.score_matrix()
    if matrix:
        st.subheader("Scores: reviewer × reviewed")
        frame = pd.DataFrame(matrix).T.reindex(index=members, columns=members)
        figure = px.imshow(
            frame, text_auto=True, zmin=1, zmax=10, color_continuous_scale="Viridis",
            labels={"x": "reviewed", "y": "reviewer", "color": "score"},
        )  # fmt: skip
        st.plotly_chart(figure, use_container_width=True)
        st.subheader("Justifications")
        st.dataframe(
            reviews_table(view),
            hide_index=True,
        )
    for failure in view.review_failures:
        st.warning(f"review by {failure.reviewer} failed: {failure.reason}. {failure.detail}")
