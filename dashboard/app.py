"""`council dashboard`: the Streamlit entry point (run by `streamlit run`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent

st.set_page_config(page_title="council", page_icon="⚖️", layout="wide")
navigation = st.navigation(
    [
        st.Page(HERE / "pages" / "ask.py", title="Ask", icon="❓", default=True),
        st.Page(HERE / "pages" / "responses.py", title="Responses", icon="🗂️"),
        st.Page(HERE / "pages" / "kpis.py", title="KPIs", icon="📊"),
        st.Page(HERE / "pages" / "history.py", title="History", icon="🕘"),
        st.Page(HERE / "pages" / "health.py", title="Health", icon="💓"),
    ]
)
navigation.run()
