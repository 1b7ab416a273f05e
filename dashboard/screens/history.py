"""History: every session the COUNCIL stream holds, searchable; each opens in Responses."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from council.dashboard.common import feed

st.title("History")
views = feed().sessions()
needle = st.text_input("Search questions and answers", placeholder="capital")
if needle:
    lowered = needle.lower()
    views = [
        v
        for v in views
        if lowered in v.question.lower() or (v.final and lowered in v.final.answer.lower())
    ]
if not views:
    st.info("No sessions match." if needle else "No sessions yet.")
    st.stop()
st.dataframe(
    pd.DataFrame(
        [
            {
                "started": datetime.fromtimestamp(v.started_at).strftime("%Y-%m-%d %H:%M:%S"),
                "question": v.question,
                "status": v.status,
                "members": ", ".join(v.started.plan.members) if v.started else "",
                "answer": (v.final.answer[:120] if v.final else ""),
                "session": v.session_id,
            }
            for v in views
        ]
    ),
    hide_index=True,
)
ids = [v.session_id for v in views]
questions = {v.session_id: f"{v.question[:60]} · {v.session_id}" for v in views}
chosen = st.selectbox("Open a session", ids, format_func=questions.__getitem__)
if st.button("Open in Responses"):
    st.session_state["selected_session"] = chosen
    st.switch_page("screens/responses.py")
