"""`council dashboard`: the Streamlit entry point (run by `streamlit run`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from council.dashboard.login import logged_in

HERE = Path(__file__).parent

st.set_page_config(page_title="council", page_icon=":material/balance:", layout="wide")
if not logged_in():
    st.stop()
navigation = st.navigation(
    [
        st.Page(HERE / "screens" / "chat.py", title="Chat", icon=":material/chat:", default=True),
        st.Page(HERE / "screens" / "ask.py", title="Ask", icon=":material/forum:"),
        st.Page(
            HERE / "screens" / "responses.py", title="Responses", icon=":material/rate_review:"
        ),
        st.Page(HERE / "screens" / "kpis.py", title="KPIs", icon=":material/monitoring:"),
        st.Page(HERE / "screens" / "history.py", title="History", icon=":material/history:"),
        st.Page(HERE / "screens" / "eval.py", title="Eval", icon=":material/fact_check:"),
        st.Page(HERE / "screens" / "health.py", title="Health", icon=":material/favorite:"),
    ]
)
navigation.run()
