"""Every dashboard page, run by Streamlit's AppTest against a real bus and a real council.

The events come from a real session of the test council (SmolLM2 on the
embedded runtime, real `council agents`/`chairman` processes), asked through
the CLI and then, on the Ask page, through the dashboard itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MEMBERS, TEST_MODEL, ask_json
from helpers import turns_at
from streamlit.testing.v1 import AppTest

import council.dashboard
from council.bus.transport.server import EmbeddedNats
from council.dashboard.config import ENV, DashboardConfig

pytestmark = pytest.mark.model

APP = Path(council.dashboard.__file__).parent / "app.py"


@pytest.fixture(scope="module")
def finished(council_processes: dict[str, str]) -> dict[str, Any]:
    """One real session, asked with `council ask --json`: its FinalAnswer."""
    result = ask_json(council_processes, "What is the capital of France?")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture
def app(council_nats: EmbeddedNats, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv(ENV, DashboardConfig(nats_url=council_nats.url).env()[ENV])
    return AppTest.from_file(str(APP), default_timeout=60)


def show(
    app: AppTest, page: str, ready: Callable[[AppTest], bool], timeout_s: float = 60
) -> AppTest:
    """Run ``page`` until ``ready`` holds: the feed fills in the background."""
    deadline = time.monotonic() + timeout_s
    while True:
        app.switch_page(page)
        app.run()
        assert not app.exception, app.exception
        if ready(app) or time.monotonic() > deadline:
            return app
        time.sleep(0.5)


def answered(app: AppTest) -> list[Any]:
    """The Chat page's finished turns: each has its deliberation (a running one shows
    its members as they write instead)."""
    return [e for e in app.expander if e.label == "Deliberation"]


def texts(app: AppTest) -> str:
    return "\n".join(m.value for m in app.markdown) + "\n".join(c.value for c in app.caption)


def test_history_lists_the_session_and_searches(app: AppTest, finished: dict[str, Any]) -> None:
    """History shows sessions from the stream; a search narrows them."""
    sid = finished["session_id"]
    show(
        app,
        "screens/history.py",
        lambda a: bool(a.dataframe) and sid in a.dataframe[0].value["session"].values,
    )
    frame = app.dataframe[0].value
    row = frame[frame["session"] == sid].iloc[0]
    assert row["question"] == "What is the capital of France?"
    assert row["status"] == "done"
    app.selectbox[0].set_value(sid)
    app.button[0].click().run()
    assert app.session_state["selected_session"] == sid
    assert any(t.value == "Responses" for t in app.title)  # opened in Responses
    show(app, "screens/history.py", lambda a: bool(a.text_input))
    app.text_input[0].input("no-such-words-anywhere").run()
    assert any("No sessions match" in i.value for i in app.info)


def test_responses_show_opinions_scores_and_justifications(
    app: AppTest, finished: dict[str, Any]
) -> None:
    """Responses: each member's opinion, the score heatmap, one row per review."""
    app.session_state["selected_session"] = finished["session_id"]
    show(app, "screens/responses.py", lambda a: len(a.get("plotly_chart")) > 0)
    assert "**Question:** What is the capital of France?" in texts(app)
    for member in MEMBERS:
        assert member in "\n".join(m.value for m in app.markdown)
    assert len(app.get("plotly_chart")) == 1
    reviews = app.dataframe[0].value
    assert len(reviews) == len(finished["reviews"])
    assert set(reviews.columns) >= {"reviewer", "reviewed", "score", "justification"}


def test_kpis_chart_tokens_latency_stages_and_radar(app: AppTest, finished: dict[str, Any]) -> None:
    """KPIs: four charts and the per-model and per-stage tables from finished sessions."""
    show(app, "screens/kpis.py", lambda a: len(a.get("plotly_chart")) >= 4)
    assert len(app.get("plotly_chart")) == 4
    per_model = app.dataframe[0].value
    assert TEST_MODEL in per_model["model"].values
    assert per_model.loc[per_model["model"] == TEST_MODEL, "tokens"].iloc[0] > 0
    stages = app.dataframe[1].value
    assert finished["session_id"] in stages["session"].values


def test_health_shows_every_node(app: AppTest, council_processes: dict[str, str]) -> None:
    """Health: agents and chairman heartbeats with CPU, RAM and models."""
    show(
        app,
        "screens/health.py",
        lambda a: bool(a.dataframe) and {"agents", "chairman"} <= set(a.dataframe[0].value["role"]),
    )
    nodes = app.dataframe[0].value
    agents = nodes[nodes["role"] == "agents"].iloc[0]
    assert TEST_MODEL in agents["models"]
    assert agents["rss MB"] > 0


def test_ask_page_runs_a_council_and_shows_the_answer(
    app: AppTest, council_processes: dict[str, str]
) -> None:
    """Ask: members come from the roster; asking shows progress, then answer and ranking."""
    show(
        app,
        "screens/ask.py",
        lambda a: bool(a.multiselect) and TEST_MODEL in a.multiselect[0].options,
    )
    members = app.multiselect[0]
    assert f"{TEST_MODEL}@careful" in members.options
    members.set_value(MEMBERS)
    app.text_area[0].input("Name a planet.")
    app.button[0].click().run()
    assert not app.error, [e.value for e in app.error]
    sid = app.session_state["ask_session"]
    show(app, "screens/ask.py", lambda a: any(m.value == "Final answer" for m in a.subheader), 240)
    assert any(m.value == "Final answer" for m in app.subheader), texts(app)
    assert sid in texts(app)
    assert len(app.dataframe[0].value) == 3
    assert [p.value for p in app.get("progress")] == [100, 100, 100]  # percent


def test_chat_page_answers_then_follows_up_in_the_same_conversation(
    app: AppTest, council_processes: dict[str, str], council_nats: EmbeddedNats
) -> None:
    """Chat: a question gets its answer and its deliberation; a follow-up continues the
    thread: both turns are one conversation on the stream."""
    show(app, "screens/chat.py", lambda a: bool(a.chat_input))
    for number, said in enumerate(["What is the capital of Italy?", "And its river?"], 1):
        app.chat_input[0].set_value(said).run()
        assert not app.error, [e.value for e in app.error]
        show(app, "screens/chat.py", lambda a, n=number: len(answered(a)) >= n, 240)
        assert len(answered(app)) == number, texts(app)
    cid = app.session_state["chat_conversation"]
    turns = asyncio.run(turns_at(council_nats.url, cid))
    assert [t.question for t in turns] == ["What is the capital of Italy?", "And its river?"]
    assert all(t.answer in texts(app) for t in turns)


def test_chat_page_asks_the_preset_chosen_in_its_sidebar(
    app: AppTest, council_processes: dict[str, str], council_nats: EmbeddedNats
) -> None:
    """The sidebar lists the chairman's presets; the one chosen answers the next
    question, and its turn records it."""
    show(app, "screens/chat.py", lambda a: len(a.sidebar.selectbox) > 0)
    council = app.sidebar.selectbox(key="chat_preset")
    assert {"default", "fast", "deliberate"} <= set(council.options)
    council.set_value("fast").run()
    app.chat_input[0].set_value("What is 3 + 4?").run()
    assert not app.error, [e.value for e in app.error]
    show(app, "screens/chat.py", lambda a: len(answered(a)) >= 1, 240)
    assert "preset fast" in texts(app)
    cid = app.session_state["chat_conversation"]
    (turn,) = asyncio.run(turns_at(council_nats.url, cid))
    assert (turn.question, turn.preset) == ("What is 3 + 4?", "fast")
