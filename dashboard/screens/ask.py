"""Ask: pick members from what the agents serve, ask, watch the stages and the answer stream."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from council.bus.errors import CouncilError
from council.bus.members import PERSONAS, member_name
from council.bus.messages import AgentInfo, Question
from council.dashboard.common import being_written, feed, said
from council.dashboard.feed import Feed
from council.dashboard.view import SessionView

st.title("Ask the council")
current = feed()


@st.cache_data(ttl=5.0, show_spinner=False)
def served_models(_feed: Feed) -> list[AgentInfo]:
    """The roster, asked at most every 5 s: each ask waits for the agents' answers."""
    return _feed.roster()


try:
    roster = served_models(current)
except CouncilError as exc:
    st.error(str(exc))
    roster = []
served = sorted({m.name for info in roster for m in info.models if "opinion" in m.kinds})
chairs = sorted({m.name for info in roster for m in info.models if "synthesize" in m.kinds})
if not served:
    st.warning("No agents answer on the bus yet: start them with `council up` or `council agents`.")
options = [member_name(m, sample=n) for m in served for n in (1, 2, 3)]
options += [member_name(m, method="code", sample=n) for m in served for n in (1, 2)]
options += [member_name(m, persona=p) for m in served for p in PERSONAS]
CONFIGURED = "(as the council is configured)"

with st.form("ask"):
    question = st.text_area("Question", placeholder="What is the capital of Australia?")
    members = st.multiselect("Council members", options, placeholder="as the council is configured")
    left, right = st.columns(2)
    chairman = left.selectbox("Chairman", [CONFIGURED, *chairs], index=0)
    mode = right.radio("Review mode", ["pairwise", "rank", "compute"], horizontal=True)
    asked = st.form_submit_button("Ask", type="primary")

if asked:
    try:
        accepted = current.ask(
            Question(
                question=question,
                members=members,
                chairman="" if chairman == CONFIGURED else chairman,
                mode=mode,  # type: ignore[arg-type]
            )
        )
        st.session_state["ask_session"] = accepted.session_id
        st.session_state["selected_session"] = accepted.session_id
    except CouncilError as exc:
        st.error(str(exc))


def show_progress(view: SessionView) -> None:
    for stage, (done, expected) in view.progress().items():
        why = view.reasons.get(stage, "")
        if stage in view.reasons and not expected:
            label = f"{stage}: skipped, {why}" if why else f"{stage}: skipped"
            st.progress(1.0, text=label)
            continue
        label = f"{stage}: {done}/{expected}" if expected else f"{stage}: waiting"
        st.progress(min(1.0, done / expected) if expected else 0.0, text=label)
        if why:
            st.caption(f"{stage}: {why}")


@st.fragment(run_every=1.0)
def live_session() -> None:
    session_id = st.session_state.get("ask_session")
    if not session_id:
        return
    view = current.session(session_id)
    if view is None:
        st.caption(f"session {session_id}: waiting for its first event …")
        return
    st.caption(f"session {session_id} · {view.status}")
    if not view.finished and st.button("Stop", key=f"stop-{session_id}"):
        try:
            current.stop(session_id)
        except CouncilError as exc:
            st.error(str(exc))
    show_progress(view)
    for lost in view.lost:
        then = "asked another agent" if lost.reissued else "gave up"
        st.warning(f"agent {lost.node} went silent on {lost.member} ({lost.stage}): {then}")
    for member, failure in view.failures.items():
        if failure.reason == "not_needed":
            st.caption(f"{member}: not needed ({failure.detail})")
        else:
            st.error(f"{member} failed in {failure.stage}: {failure.reason} {failure.detail}")
    if view.final:
        st.subheader("Final answer")
        if view.final.conclusion:
            st.markdown(f"**{said(view.final.conclusion)}**")
        st.markdown(said(view.final.answer))
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "rank": e.rank,
                        "member": e.member,
                        "label": e.label,
                        "score": e.score,
                        "raw mean": e.raw_mean,
                        "spread": e.spread,
                        "tied": e.tied,
                    }
                    for e in view.final.ranking
                ]  # fmt: skip
            ),
            hide_index=True,
        )
    elif view.failed:
        st.error(f"The session failed: {view.failed.reason}. {view.failed.detail}")
    else:
        streamed = view.live.get(("synthesis", "chairman"), "")
        if streamed:
            st.subheader("Final answer (streaming)")
            st.markdown(being_written(streamed))


live_session()
