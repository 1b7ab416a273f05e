"""What every page shares: the cached feed, colours per model, a session picker, evals_dir."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd
import streamlit as st

from council.bus import mathtext
from council.bus.transport.connection import Credentials
from council.dashboard import login
from council.dashboard.config import DashboardConfig
from council.dashboard.feed import Feed
from council.dashboard.view import SessionView

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"]
STALE_AFTER_S = 10.0


@st.cache_resource(on_release=Feed.close)
def _shared_feed(url: str, credentials: Credentials) -> Feed:
    return Feed(url, credentials=credentials)


@st.cache_resource(scope="session", on_release=Feed.close)
def _persons_feed(url: str, credentials: Credentials, person: str) -> Feed:
    """A person's own: it lives as long as their browser session."""
    return Feed(url, credentials=credentials, person=person)


def feed() -> Feed:
    """The feed of this browser session: the process's one (everyone's sessions), or a
    person's own when they logged in with theirs. Shows its error and stops the page
    when it has none."""
    config = DashboardConfig.given()
    own = login.person()
    if own is not None:
        current = _persons_feed(config.nats_url, own, own.user)
    else:
        current = _shared_feed(config.nats_url, config.credentials)
    current.wait_ready(3.0)
    if current.error:
        st.error(current.error)
        st.stop()
    return current


def evals_dir() -> Path:
    """Where `council eval` saved its runs, as `council dashboard` was told."""
    return Path(DashboardConfig.given().evals_dir)


def colour(model: str) -> str:
    return PALETTE[hashlib.sha256(model.encode()).digest()[0] % len(PALETTE)]


def badge(member: str, model: str) -> str:
    return f'<span style="color:{colour(model)};font-weight:600">● {member}</span>'


def pick_session(views: list[SessionView], key: str) -> SessionView | None:
    """A session chooser defaulting to the one opened elsewhere, else the newest."""
    if not views:
        st.info("No sessions yet: ask a question on the Ask page.")
        return None
    ids = [v.session_id for v in views]
    wanted = st.session_state.get("selected_session")
    index = ids.index(wanted) if wanted in ids else 0
    labels = {v.session_id: f"{v.question[:60]} · {v.status} · {v.session_id}" for v in views}
    chosen = st.selectbox("Session", ids, index=index, format_func=labels.__getitem__, key=key)
    st.session_state["selected_session"] = chosen
    return next(v for v in views if v.session_id == chosen)


def reviews_table(view: SessionView) -> pd.DataFrame:
    """Every review of a session, de-anonymized: who scored whom, and why."""
    return pd.DataFrame(
        [
            {
                "reviewer": r.reviewer,
                "reviewed": r.reviewed,
                "score": r.score,
                "justification": r.justification,
                "repaired": r.repaired,
            }
            for r in view.reviews
        ]
    )


def said(text: str) -> str:
    """A model's or a user's text for st.markdown: its math (``\\( \\)``, ``\\[ \\]``,
    ``$$``, ``\\boxed``) set by KaTeX, and a dollar sign elsewhere money, not the start
    of a formula (Streamlit would set "$2 ... $10" as math)."""
    shown = []
    for piece in mathtext.pieces(text):
        if piece.kind == "text":
            shown.append(piece.text.replace("$", "\\$"))
        elif piece.kind == "code":
            shown.append(piece.text)
        else:
            latex = _UNESCAPED_DOLLAR.sub(r"\\$", piece.text.strip())
            shown.append(f"${latex}$" if piece.kind == "inline" else f"\n\n$$\n{latex}\n$$\n\n")
    return "".join(shown)


_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def being_written(text: str) -> str:
    """A text a model is still writing, for st.markdown: as ``said``, without a formula
    it has not closed yet, and with a cursor."""
    return said(mathtext.written_so_far(text)) + " ▌"
