"""`council api`: the official `openai` client against the council as an OpenAI model,
on a scripted council over a real bus, and as a real process on the real test model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import TEST_MODEL
from helpers import served, stored_at
from nats.aio.client import Client
from test_bus import MODELS, council

from council.agents.runtimes.scripted import HANG
from council.api.server import ApiConfig, CouncilApi
from council.api.streaming import REPLACED, AnswerStream
from council.bus import subjects
from council.bus.events import FinalAnswer, SessionCancelled, SessionStarted
from council.bus.fences import unfenced
from council.bus.messages import TokenDelta
from council.bus.transport.connection import Credentials
from council.bus.transport.server import EmbeddedNats, free_port
from council.bus.transport.stream import conversation, stored_events

KEY = "k-test-key"


@pytest.fixture
async def api(nats_server: EmbeddedNats) -> AsyncIterator[openai.AsyncOpenAI]:
    """The API in this process, on a scripted council; an `openai` client of it."""
    async with serving_api(nats_server) as client:
        yield client


@asynccontextmanager
async def serving_api(
    nats_server: EmbeddedNats, *, held: bool = False, agreed: str = "", **chairman_options: Any
) -> AsyncIterator[openai.AsyncOpenAI]:
    """``held``: the first session's calls never end (it holds its slot); ``agreed``: the
    first session's members all answer this."""
    port = free_port()
    app = CouncilApi(ApiConfig(nats_server.url, Credentials(), KEY)).app()
    async with council(nats_server, **chairman_options) as c:
        for model in MODELS if held else ():
            c.runtime.enqueue(model, HANG)
        for model in MODELS if agreed else ():
            c.runtime.enqueue(model, agreed)
        async with served(app, port, graceful_s=2):  # a held request never ends by itself
            yield openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY)


async def test_the_council_answers_as_an_openai_model_and_follows_up(
    api: openai.AsyncOpenAI, nc: Client
) -> None:
    """`models.list` names the council, its presets and the served models; a completion is a
    session whose answer, tokens and summary come back; a follow-up's earlier
    messages reach the members as the conversation so far, and it continues the
    stored conversation they match (an edited thread starts its own)."""
    models = [m.id for m in (await api.models.list()).data]
    presets = ["council-fast", "council-deliberate", "council-methods", "council-mixed"]
    assert models == ["council", *presets, *MODELS]
    first = await api.chat.completions.create(
        model="council", messages=[{"role": "user", "content": "What is 2 + 2?"}]
    )
    answer = first.choices[0].message.content
    assert answer
    assert first.usage is not None
    assert first.usage.total_tokens > 0
    summary = (first.model_extra or {})["council"]
    assert summary["members"] == MODELS
    assert set(summary["stages"]) == {"opinions", "reviews", "synthesis"}
    events = await stored_events(nc, summary["session_id"])
    assert events[-1].answer == answer  # type: ignore[union-attr]

    again = await api.chat.completions.create(
        model="council",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "And times 3?"},
        ],
    )
    started = (await stored_events(nc, (again.model_extra or {})["council"]["session_id"]))[0]
    assert isinstance(started, SessionStarted)
    assert started.plan.question == "And times 3?"
    assert [(t.question, t.answer) for t in started.plan.history] == [("What is 2 + 2?", answer)]
    thread = summary["conversation"]
    assert (again.model_extra or {})["council"]["conversation"] == thread
    assert [t.question for t in await conversation(nc, thread)] == [
        "What is 2 + 2?",
        "And times 3?",
    ]
    edited = await api.chat.completions.create(
        model="council",
        messages=[
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "Five."},
            {"role": "user", "content": "And times 3?"},
        ],
    )
    assert (edited.model_extra or {})["council"]["conversation"] != thread

    alone = await api.chat.completions.create(
        model="m2", messages=[{"role": "user", "content": "Hi"}]
    )
    assert (alone.model_extra or {})["council"]["members"] == ["m2"]

    fast = await api.chat.completions.create(
        model="council-fast", messages=[{"role": "user", "content": "Quick: 2 + 2?"}]
    )
    ran = (fast.model_extra or {})["council"]
    assert (ran["preset"], ran["strategy"]) == ("fast", "majority-or-chairman")
    with pytest.raises(openai.NotFoundError, match="unknown_preset|presets are"):
        await api.chat.completions.create(
            model="council-nosuch", messages=[{"role": "user", "content": "Hi"}]
        )


async def test_a_streamed_completion_sends_the_answer_as_it_is_written(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """The chairman's synthesis arrives as it is written (models writing a word each
    60 ms, deltas sent each 50 ms), the stages' progress in chunks of their own
    (``council_progress``), then usage and the summary; the text is the stored final
    answer. A model asked alone streams its own words."""
    async with serving_api(nats_server, pace_s=0.06) as api:
        await streamed_answer(api, nc)


async def streamed_answer(api: openai.AsyncOpenAI, nc: Client) -> None:
    stream = await api.chat.completions.create(
        model="council", messages=[{"role": "user", "content": "Name a colour."}], stream=True
    )
    chunks = [c async for c in stream]
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(contents) > 3  # word by word, as the scripted chairman writes
    progress = [(c.model_extra or {}).get("council_progress") for c in chunks]
    lines = [p["line"] for p in progress if p]
    assert "opinions 3/3" in " ".join(lines)
    assert any(line.startswith("opinions 3/3 · reviews 6/6 · synthesis 0/1") for line in lines)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None
    assert last.usage.total_tokens > 0
    session = (last.model_extra or {})["council"]["session_id"]
    assert "".join(contents) == (await stored_events(nc, session))[-1].answer  # type: ignore[union-attr]

    alone = await api.chat.completions.create(
        model="m2", messages=[{"role": "user", "content": "Name a planet."}], stream=True
    )
    words = [
        c.choices[0].delta.content async for c in alone if c.choices and c.choices[0].delta.content
    ]
    assert len(words) > 3


async def test_a_standing_majority_is_streamed_as_soon_as_it_stands(
    nats_server: EmbeddedNats,
) -> None:
    """When the members agree, the answer that stands is sent when the reviews are
    skipped, before the session's last stage is even decided."""
    agreed = "6 * 7 is 42.\nFinal answer: 42"
    async with serving_api(nats_server, agreed=agreed, strategy="majority-then-synthesize") as api:
        stream = await api.chat.completions.create(
            model="council", messages=[{"role": "user", "content": "What is 6 * 7?"}], stream=True
        )
        chunks = [c async for c in stream]
    said = [i for i, c in enumerate(chunks) if c.choices and c.choices[0].delta.content]
    lines = [((c.model_extra or {}).get("council_progress") or {}).get("line", "") for c in chunks]
    skipped = next(i for i, line in enumerate(lines) if "synthesis skipped" in line)
    assert said
    assert said[0] < skipped
    summary = (chunks[-1].model_extra or {})["council"]
    assert (
        "agree" in summary["stages"]["reviews"]["reason"]
        or summary["stages"]["reviews"]["calls"] == 0
    )


async def test_bad_key_bad_request_and_unknown_model_get_openai_errors(
    api: openai.AsyncOpenAI,
) -> None:
    wrong = api.with_options(api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        await wrong.models.list()
    with pytest.raises(openai.BadRequestError, match="last message must be the user"):
        await api.chat.completions.create(
            model="council", messages=[{"role": "assistant", "content": "hello"}]
        )
    with pytest.raises(openai.BadRequestError, match="empty"):
        await api.chat.completions.create(
            model="council", messages=[{"role": "user", "content": "   "}]
        )
    with pytest.raises(openai.NotFoundError, match="no agent serves"):
        await api.chat.completions.create(
            model="nosuchmodel", messages=[{"role": "user", "content": "hi"}]
        )


async def test_a_full_queue_is_429_with_retry_after(nats_server: EmbeddedNats) -> None:
    """One slot, a queue of one: the first question runs, the second waits its turn,
    the third is refused as an OpenAI rate limit that says when to come back."""
    async with serving_api(nats_server, held=True, max_sessions=1, queue=1) as api:
        client = api.with_options(max_retries=0)
        asked = {"messages": [{"role": "user", "content": "hi"}], "model": "council"}
        waiting = [asyncio.create_task(client.chat.completions.create(**asked)) for _ in "ab"]
        await asyncio.sleep(1.0)
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(**asked)
        for task in waiting:
            task.cancel()
    assert int(refused.value.response.headers["retry-after"]) > 0
    assert "busy" in str(refused.value)


async def test_a_client_that_gives_up_stops_its_session(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A completion not streamed whose client times out: the API notices it is gone and
    stops the session (its agents free their calls), as it does for a stream."""
    async with serving_api(nats_server, held=True) as api:
        before = await cancelled_sessions(nc)
        impatient = api.with_options(max_retries=0, timeout=2.0)
        with pytest.raises(openai.APITimeoutError):
            await impatient.chat.completions.create(
                model="council", messages=[{"role": "user", "content": "Will you answer?"}]
            )
        for _ in range(100):
            stopped = await cancelled_sessions(nc) - before
            if stopped:
                break
            await asyncio.sleep(0.1)
    (session,) = stopped
    cancelled = (await stored_events(nc, session))[-1]
    assert isinstance(cancelled, SessionCancelled)
    assert "the API client went away" in cancelled.detail


async def cancelled_sessions(nc: Client) -> set[str]:
    info = await nc.jetstream().stream_info(
        subjects.STREAM, subjects_filter=subjects.session_event("*.*", "session_cancelled")
    )
    return {subjects.session_of(subject) for subject in info.state.subjects or {}}


@pytest.mark.processes
@pytest.mark.parametrize(
    "written",
    [
        "Paris is the capital.",
        "\n\nParis.\n\n",  # the answer drops blank lines around it
        "Paris.\n\nIt is.",
        "<<<Response A>>>\nParis is the capital.\n<<<END Response A>>>\n",  # echoed markers
        "As <<<Response B>>> says, 2 < 3 and x << 1.\nFinal answer: 4 <<<END Response B>>",
        "  <<<Response C>>>\nYes <<Response A>>\r\nand no.",
    ],
)
@pytest.mark.parametrize("size", [1, 3, 1000])
def test_a_streamed_synthesis_is_the_final_answer(written: str, size: int) -> None:
    """However the model's tokens cut it, a client's text is the chairman's answer
    exactly: echoed markers left out as they stream, blank lines at its ends never sent."""
    stream = AnswerStream()
    pieces = [
        stream.delta(
            TokenDelta(session_id="p.s", stage="synthesis", member="chairman", text=t, index=i)
        )
        for i, t in enumerate(written[at : at + size] for at in range(0, len(written), size))
    ]
    final = final_answer(unfenced(written))
    assert "".join(pieces) + stream.event(final) == unfenced(written)


@pytest.mark.processes
def test_a_synthesis_replaced_by_another_answer_follows_a_rule() -> None:
    """The chairman's model failed mid-answer and the top-ranked opinion is the answer."""
    stream = AnswerStream()
    sent = stream.delta(
        TokenDelta(session_id="p.s", stage="synthesis", member="chairman", text="Par", index=0)
    )
    assert sent + stream.event(final_answer("Rome.")) == "Par" + REPLACED + "Rome."


def final_answer(answer: str) -> FinalAnswer:
    return FinalAnswer(
        session_id="p.s", answer=answer, chairman="m1", ranking=[], opinions=[], reviews=[],
        failed=[], usage={}, usage_by_model={}, latency_ms={},
    )  # fmt: skip


def test_council_api_process_answers_and_follows_up_on_the_real_model(
    council_processes: dict[str, str], tmp_path: Path
) -> None:
    """`council api` as a process beside the real test council: the `openai` client
    asks, then follows up with the answer in its messages; a streamed request gets
    the synthesis in pieces as the real chairman model writes it."""
    port = free_port()
    env = {**council_processes, "COUNCIL_API_PORT": str(port), "COUNCIL_API_KEY": KEY}
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "council.cli", "api"], env=env, stderr=log)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, timeout=600)
    try:
        deadline = time.monotonic() + 120
        while True:  # the API listening, and the agents serving the test model
            try:
                if TEST_MODEL in [m.id for m in client.models.list().data]:
                    break
            except openai.APIConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()[-2000:]
            time.sleep(0.5)
        question = {"role": "user", "content": "What is the capital of France?"}
        first = client.chat.completions.create(model="council", messages=[question])
        answer = first.choices[0].message.content
        assert answer
        follow_up = client.chat.completions.create(
            model="council",
            messages=[
                question,
                {"role": "assistant", "content": answer},
                {"role": "user", "content": "And its population?"},
            ],
        )
        assert follow_up.choices[0].message.content
        summary = (follow_up.model_extra or {})["council"]
        assert summary["stages"]["opinions"]["calls"] == 3
        started = asyncio.run(stored_at(env["COUNCIL_NATS_URL"], summary["session_id"]))[0]
        assert isinstance(started, SessionStarted)
        turns = [(t.question, t.answer) for t in started.plan.history]
        assert turns == [(question["content"], answer)]
        streamed = list(  # every stage, so the chairman's synthesis is what streams
            client.chat.completions.create(
                model="council-deliberate", messages=[question], stream=True
            )
        )
        contents = [
            c.choices[0].delta.content for c in streamed if c.choices and c.choices[0].delta.content
        ]
        assert len(contents) > 1  # as the chairman's model writes it, not whole at the end
        session = (streamed[-1].model_extra or {})["council"]["session_id"]
        final = asyncio.run(stored_at(env["COUNCIL_NATS_URL"], session))[-1]
        assert isinstance(final, FinalAnswer)
        text = "".join(contents)  # the synthesis, or it and then what replaced it
        assert text == final.answer or text.endswith(REPLACED + final.answer)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode in (0, -15), (tmp_path / "api.log").read_text()[-2000:]
