"""The Chat page by Streamlit's AppTest on a real bus and a scripted council: the
members' opinions fill in as they are written (models that write a word each
100 ms, so that stage 1 lasts seconds); a long history lists the newest only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client
from streamlit.testing.v1 import AppTest
from test_bus import MODELS, council

import council.dashboard.config as dashboard_config
from council.bus.client.ask import follow, submit
from council.bus.events import FinalAnswer
from council.bus.messages import Question
from council.bus.transport.server import EmbeddedNats
from council.dashboard.config import ENV, DashboardConfig

APP = Path(dashboard_config.__file__).parent / "app.py"
LIVE = "The members, as they write"


async def test_the_chat_page_shows_each_opinion_as_it_is_written(
    nats_server: EmbeddedNats, nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During stage 1 the running turn's members are open, each with the words it has
    written so far; once answered, the turn shows its answer and a closed
    deliberation instead."""
    monkeypatch.setenv(ENV, DashboardConfig(nats_url=nats_server.url).env()[ENV])
    words = " ".join(f"word{i}" for i in range(80))
    async with council(nats_server, pace_s=0.1) as c:
        for model in MODELS:
            c.runtime.enqueue(model, words)
        app = AppTest.from_file(str(APP), default_timeout=60)
        await asyncio.to_thread(app.run)  # the page's feed follows the council from now
        accepted = await submit(nc, Question(question="Slowly, please"))
        app.session_state["chat_conversation"] = accepted.conversation
        partial = ""
        for _ in range(100):
            await asyncio.to_thread(app.run)
            assert not app.exception, app.exception
            live = [e for e in app.expander if e.label == LIVE]
            shown = [m.value for e in live for m in e.markdown if "▌" in m.value]
            if shown and "word1 " in shown[0]:  # more than the first word: it grows
                partial = shown[0]
                break
            await asyncio.sleep(0.2)
        assert partial.startswith("word0 word1")
        assert "word79" not in partial  # still being written
        events = [e async for e in follow(nc, accepted.session_id, timeout_s=60)]
        assert isinstance(events[-1], FinalAnswer)
        for _ in range(50):
            await asyncio.to_thread(app.run)
            if any(e.label == "Deliberation" for e in app.expander):
                break
            await asyncio.sleep(0.2)
    assert [e.label for e in app.expander] == ["Deliberation"]


def test_live_text_begun_before_the_feed_followed_it_says_so() -> None:
    from council.bus.messages import TokenDelta
    from council.dashboard.view import SessionView

    view = SessionView("p.s")
    for index, text in ((3, "word3"), (4, " word4")):
        view.add_delta(
            TokenDelta(session_id="p.s", stage="opinions", member="m1", text=text, index=index)
        )
    view.add_delta(TokenDelta(session_id="p.s", stage="opinions", member="m2", text="a", index=0))
    assert view.live == {("opinions", "m1"): "… word3 word4", ("opinions", "m2"): "a"}


async def test_the_sidebar_lists_the_newest_conversations_and_search_finds_the_rest(
    nats_server: EmbeddedNats, nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A button for each of hundreds of conversations, made anew every 2 s, slowed the
    models on the same machine: the newest 30 are listed, the others found by search."""
    monkeypatch.setenv(ENV, DashboardConfig(nats_url=nats_server.url).env()[ENV])
    async with council(nats_server):
        for number in range(33):
            accepted = await submit(nc, Question(question=f"Question {number:02}?"))
            assert [e async for e in follow(nc, accepted.session_id, timeout_s=30)]
        app = AppTest.from_file(str(APP), default_timeout=60)
        app.session_state["chat_search"] = "question"  # not the other tests' conversations
        for _ in range(50):  # the page's feed reads the stored sessions in the background
            await asyncio.to_thread(app.run)
            listed = [b.label for b in app.sidebar.button if b.label.startswith("Question")]
            if len(listed) == 30:
                break
            await asyncio.sleep(0.2)
        assert listed == [f"Question {n:02}? (1)" for n in range(32, 2, -1)]
        assert [c.value for c in app.sidebar.caption][-1] == "3 older: search for a word of one"
        app.sidebar.text_input(key="chat_search").set_value("Question 01").run()
        found = [b.label for b in app.sidebar.button if b.label.startswith("Question")]
        assert found == ["Question 01? (1)"]
