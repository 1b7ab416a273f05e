"""Chat: the conversations in the sidebar, the thread in the middle, each answer streamed
as it is written and its deliberation one click away; follow-ups continue the thread.

Questions go to the council chosen in the sidebar: the chairman's defaults or one
of its named presets (a conversation opened goes on with the one it had); the Ask
page chooses members and chairman by hand.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from council.bus.client import export
from council.bus.documents import read_document
from council.bus.errors import CouncilError
from council.bus.messages import DEFAULT_PRESET, PresetInfo, Question, Turn
from council.dashboard.common import badge, being_written, feed, reviews_table, said
from council.dashboard.feed import Feed
from council.dashboard.view import SessionView, threads

st.title("Chat with the council")
current = feed()


def turns_of(views: list[SessionView]) -> list[Turn]:
    return [
        Turn(
            conversation=v.conversation,
            session_id=v.session_id,
            question=v.question,
            answer=v.final.answer,
            conclusion=v.final.conclusion,
            ts=v.started_at,
            preset=v.started.plan.preset if v.started else "",
            documents=v.started.plan.documents if v.started else [],
        )  # fmt: skip
        for v in views
        if v.final
    ]


# What the Chat page offers to attach; `bus.documents` reads any UTF-8 text or PDF.
# (A page is a Streamlit script: a string standing alone would be shown on it.)
ATTACHABLE = [
    "txt", "md", "markdown", "rst", "csv", "json", "yaml", "yml", "toml", "log", "pdf",
    "py", "js", "ts", "java", "c", "h", "cpp", "go", "rs", "rb", "sh", "sql", "html", "css",
]  # fmt: skip


def choose(cid: str, preset: str = "") -> None:
    st.session_state["chat_conversation"] = cid
    st.session_state["chat_preset"] = preset or DEFAULT_PRESET


@st.cache_data(ttl=30, show_spinner=False)
def preset_choices(_feed: Feed, person: str) -> dict[str, PresetInfo]:
    """The chairman's presets by name (asked again every 30 s, once per person)."""
    try:
        return {p.name: p for p in _feed.presets()}
    except CouncilError:
        return {}


def council_choice() -> None:
    """The council the next question goes to, and what it is."""
    choices = preset_choices(current, current.person)
    if not choices:
        st.caption("the council as configured (no chairman listed its presets)")
        return
    st.session_state.setdefault("chat_preset", DEFAULT_PRESET)
    if st.session_state["chat_preset"] not in choices:
        st.session_state["chat_preset"] = DEFAULT_PRESET
    chosen = choices[
        st.selectbox("Council", list(choices), key="chat_preset", help="the next question's")
    ]
    lacks = f" No agent serves {', '.join(chosen.missing)} now." if chosen.missing else ""
    st.caption(
        f"{chosen.summary}: {', '.join(chosen.members)}; chairman {chosen.chairman}; "
        f"{chosen.strategy}, {chosen.mode} reviews.{lacks}"
    )


# The newest conversations the sidebar lists (search finds the rest): a button for each
# of hundreds, made anew every 2 s, cost a tenth of a core.
LISTED = 30


@st.fragment(run_every=2.0)
def conversations_list() -> None:
    """The sidebar's conversations, refreshed on their own: one begun elsewhere (the
    terminal, the API, another tab) appears without a click."""
    st.button(
        "New conversation", icon=":material/add:", use_container_width=True,
        on_click=choose, args=("",),
    )  # fmt: skip
    search = st.text_input("Search", key="chat_search", placeholder="a word of a question")
    found = [
        (cid, views)
        for cid, views in threads(current.sessions()).items()
        if not search or any(search.lower() in v.question.lower() for v in views)
    ]
    for cid, views in found[:LISTED]:
        title = views[0].question.strip().splitlines()[0][:60] if views else cid
        last = views[-1].started
        st.button(
            f"{title} ({len(views)})",
            key=f"conv-{cid}",
            type="primary" if st.session_state.get("chat_conversation") == cid else "secondary",
            use_container_width=True,
            on_click=choose,
            args=(cid, last.plan.preset if last else ""),
        )
    if len(found) > LISTED:
        st.caption(f"{len(found) - LISTED} older: search for a word of one")


# A running session's deliberation: open while the opinions are written, closed after.
LIVE = "The members, as they write"


def deliberation(view: SessionView) -> None:
    """Every member's opinion (as it is written, while it is), the reviews with the
    ranking de-anonymized, the cost."""
    members = view.started.plan.members if view.started else list(view.opinions)
    tabs = st.tabs([*members, "Reviews", "Tokens and time"])
    for tab, member in zip(tabs, members, strict=False):
        with tab:
            if o := view.opinions.get(member):
                st.markdown(badge(member, o.model), unsafe_allow_html=True)
                st.markdown(said(o.text))
            elif (f := view.failures.get(member)) and f.reason == "not_needed":
                st.caption(f"not needed ({f.detail})")
            elif f:
                st.error(f"failed in {f.stage}: {f.reason}. {f.detail}")
            elif written := view.live.get(("opinions", member)):
                st.markdown(being_written(written))
            elif not view.finished:
                st.caption("waiting for its first words …")
    with tabs[len(members)]:
        if view.reviews:
            st.dataframe(
                reviews_table(view),
                hide_index=True,
            )
        for stage, why in view.reasons.items():
            if why:
                st.caption(f"{stage}: {why}")
        if view.final and view.final.ranking:
            st.markdown(
                "Ranking: "
                + ", ".join(f"{e.rank}. {e.member} ({e.label})" for e in view.final.ranking)
            )
    with tabs[len(members) + 1]:
        if view.final:
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "stage": stage,
                            "prompt tokens": used.prompt_tokens,
                            "completion tokens": used.completion_tokens,
                            "seconds": view.final.latency_ms.get(stage, 0.0) / 1000,
                        }
                        for stage, used in view.final.usage.items()
                    ]
                ),  # fmt: skip
                hide_index=True,
            )
    st.page_link("screens/responses.py", label="Open in Responses", icon=":material/rate_review:")


def turn(view: SessionView) -> None:
    with st.chat_message("user"):
        st.markdown(said(view.question))
        for document in view.started.plan.documents if view.started else []:
            read = f"; the council read the first {len(document.text):,}" if document.cut else ""
            size = f"{len(document.text) + document.cut:,} characters{read}"
            with st.expander(f"{document.name} ({size})", icon=":material/attach_file:"):
                st.text(document.text)
    with st.chat_message("assistant"):
        if view.final:
            st.markdown(said(view.final.answer))
            if view.started and view.started.plan.preset:
                st.caption(f"preset {view.started.plan.preset}")
            with st.expander("Deliberation"):
                deliberation(view)
        elif view.failed:
            st.warning(f"{view.status}: {view.failed.detail}")
        else:
            st.caption(view.progress_line() or "waiting for the council …")
            with st.expander(LIVE, expanded=view.stage in ("started", "opinions")):
                deliberation(view)
            written = view.live.get(("synthesis", "chairman"), "")
            if written:
                st.markdown(said(written))
            if st.button("Stop", key=f"stop-{view.session_id}", icon=":material/stop:"):
                try:
                    current.stop(view.session_id)
                except CouncilError as exc:
                    st.error(str(exc))


# A running turn is redrawn every 2 s: redrawn every second, with the browser on the
# models' machine, it left them 0.38 of their tokens a second, against 0.72 (bench.watched).
@st.fragment(run_every=2.0)
def thread() -> None:
    cid = st.session_state.get("chat_conversation", "")
    views = threads(current.sessions()).get(cid, []) if cid else []
    if not views:
        st.caption("Ask anything: the council answers, and follow-ups continue the thread.")
    for view in views:
        turn(view)
    if views and all(v.finished for v in views):
        turns = turns_of(views)
        left, right = st.columns(2)
        left.download_button(
            "Export as Markdown", export.markdown(turns), file_name=f"council-{cid}.md",
            icon=":material/download:", key=f"export-{cid}-{len(turns)}",
        )  # fmt: skip
        if right.button("Delete this conversation", icon=":material/delete:", key=f"del-{cid}"):
            try:
                current.forget(cid)
                st.session_state["chat_conversation"] = ""
                st.rerun()
            except CouncilError as exc:
                st.error(str(exc))


with st.sidebar:
    council_choice()
    conversations_list()
thread()
asked = st.chat_input(
    "Ask the council",
    accept_file="multiple",
    file_type=ATTACHABLE,
)
if asked and (asked.text.strip() or asked.files):
    cid = st.session_state.get("chat_conversation", "")
    known = threads(current.sessions()).get(cid, [])
    follow_up = cid if any(v.final for v in known) else ""
    try:
        documents = [read_document(f.name, f.getvalue()) for f in asked.files]
        preset = st.session_state.get("chat_preset", DEFAULT_PRESET)
        accepted = current.ask(
            Question(
                question=asked.text or "What do the attached files say?",
                conversation=follow_up,
                preset="" if preset == DEFAULT_PRESET else preset,
                documents=documents,
            )
        )
        st.session_state["chat_conversation"] = accepted.conversation
        st.rerun()
    except CouncilError as exc:  # a refused file (BadDocument) too
        st.error(str(exc))
