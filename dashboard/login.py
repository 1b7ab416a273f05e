"""The dashboard's login: a password, asked once per browser session.

The dashboard asks questions as the `dashboard` NATS user, so whoever reaches
its port is a client of the council. `council dashboard` refuses to listen
beyond loopback without a password, and `council up` makes one there.
"""

from __future__ import annotations

import hmac

import streamlit as st

from council.dashboard.config import DashboardConfig


def logged_in() -> bool:
    """True when no password is set or this browser session gave it; else shows the form."""
    expected = DashboardConfig.given().login
    if not expected or st.session_state.get("logged_in"):
        return True
    st.title("council")
    with st.form("login"):
        given = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        if hmac.compare_digest(given.encode(), expected.encode()):
            st.session_state["logged_in"] = True
            st.rerun()
        st.error("Wrong password.")
    return False
