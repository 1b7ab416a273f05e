"""The dashboard's login, asked once per browser session: a person's own (their name
and password from `council users`), or the dashboard's password.

The dashboard asks questions as the `dashboard` NATS user (an admin), so whoever
reaches its port with its password is a client of the council who sees everyone's
sessions. A person who logs in with their own name is shown, and asks as, themselves
only: the dashboard connects to NATS as them, and the server keeps them to their own.
`council dashboard` refuses to listen beyond loopback without a password, and
`council up` makes one there.
"""

from __future__ import annotations

import asyncio
import hmac

import streamlit as st

from council.bus.errors import BusUnavailable
from council.bus.transport.connection import Credentials, connect
from council.dashboard.config import DashboardConfig

PERSON = "person"
"""Where a browser session keeps the login of the person who gave theirs."""


def logged_in() -> bool:
    """True when no password is set or this browser session logged in; else shows the form."""
    config = DashboardConfig.given()
    if not config.login or st.session_state.get("logged_in"):
        return True
    st.title("council")
    with st.form("login"):
        name = st.text_input("Name", help="yours from `council users`; empty: the dashboard's")
        given = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        if name.strip():
            person = Credentials(name.strip(), given)
            if _server_accepts(config.nats_url, person):
                st.session_state[PERSON] = person
                st.session_state["logged_in"] = True
                st.rerun()
            st.error("Wrong name or password.")
        else:
            if hmac.compare_digest(given.encode(), config.login.encode()):
                st.session_state["logged_in"] = True
                st.rerun()
            st.error("Wrong password.")
    return False


def person() -> Credentials | None:
    """The login of the person this browser session is, if they gave their own."""
    given = st.session_state.get(PERSON)
    return given if isinstance(given, Credentials) else None


def _server_accepts(url: str, login: Credentials) -> bool:
    """Whether the NATS server takes this login: the server checks the password."""

    async def attempt() -> bool:
        try:
            nc = await connect(url, name=f"council-dashboard-{login.user}", credentials=login)
        except BusUnavailable:
            return False
        await nc.close()
        return True

    return asyncio.run(attempt())
