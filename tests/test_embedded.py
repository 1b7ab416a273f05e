"""The embedded runtime on a real model: streaming, usage, JSON mode, no loop blocking."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import TEST_MODEL
from helpers import generating_elsewhere

from council.agents.handlers import handle_opinion, handle_review
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.bus.errors import ModelLoadError
from council.bus.messages import (
    AgentError,
    ChatMessage,
    Completion,
    GenerationOptions,
    OpinionRequest,
    ReviewRequest,
    ReviewResult,
)
from council.chairman.prompts import opinion_messages, pairwise_messages

pytestmark = pytest.mark.model

QUESTION = [ChatMessage("system", "You are helpful."), ChatMessage("user", "Name a colour.")]


async def collect(runtime: EmbeddedRuntime, **kwargs: object) -> tuple[str, object]:
    text, usage = [], None
    async for chunk in runtime.chat(TEST_MODEL, QUESTION, **kwargs):  # type: ignore[arg-type]
        text.append(chunk.text)
        usage = chunk.usage or usage
    return "".join(text), usage


async def test_chat_streams_text_and_reports_token_usage(embedded: EmbeddedRuntime) -> None:
    """A call streams several chunks of text and ends with prompt and completion counts."""
    chunks = [
        c
        async for c in embedded.chat(
            TEST_MODEL, QUESTION, options=GenerationOptions(max_tokens=24, temperature=0)
        )
    ]
    assert len([c for c in chunks if c.text]) > 1
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens > 5
    assert 0 < usage.completion_tokens <= 24


async def test_same_seed_gives_the_same_answer(embedded: EmbeddedRuntime) -> None:
    """Seeded sampling is reproducible, so sessions can be compared on the same seeds."""
    options = GenerationOptions(max_tokens=16, temperature=0.9, seed=11)
    first, _ = await collect(embedded, options=options)
    second, _ = await collect(embedded, options=options)
    assert first == second


async def test_concurrent_calls_are_serialized_and_the_loop_stays_free(
    embedded: EmbeddedRuntime,
) -> None:
    """Three calls at once all finish; meanwhile the event loop keeps ticking."""
    busy_ticks = 0
    most_in_flight = 0

    async def ticker() -> None:
        nonlocal busy_ticks, most_in_flight
        while True:
            await asyncio.sleep(0.005)
            in_flight = embedded.statuses()[0].in_flight
            most_in_flight = max(most_in_flight, in_flight)
            busy_ticks += in_flight > 0

    tick_task = asyncio.create_task(ticker())
    options = GenerationOptions(max_tokens=24, temperature=0)
    results = await asyncio.gather(*(collect(embedded, options=options) for _ in range(3)))
    tick_task.cancel()
    assert all(text for text, _ in results)
    assert most_in_flight == 1  # one generation at a time on the loaded model
    assert busy_ticks >= 5  # the loop kept running while the model generated
    assert embedded.statuses()[0].in_flight == 0


async def test_review_in_json_mode_returns_a_clamped_score(embedded: EmbeddedRuntime) -> None:
    """A pairwise review on the real model yields a 1-10 score (or a named invalid_output)."""
    request = ReviewRequest(
        session_id="t", member=TEST_MODEL, model=TEST_MODEL,
        messages=pairwise_messages("What is 2+2?", "Response A", "4"),
        options=GenerationOptions(max_tokens=64, temperature=0), labels=["Response A"],
    )  # fmt: skip
    reply = await handle_review(embedded, request)
    if isinstance(reply, AgentError):
        assert reply.code == "invalid_output"
    else:
        assert isinstance(reply, ReviewResult)
        assert 1 <= reply.scores["Response A"] <= 10
        assert reply.usage.completion_tokens > 0


async def test_opinion_past_its_timeout_is_a_timeout_error(embedded: EmbeddedRuntime) -> None:
    """A call cut by its timeout replies AgentError(timeout) and frees the model."""
    request = OpinionRequest(
        session_id="t", member=TEST_MODEL, model=TEST_MODEL,
        messages=opinion_messages("Write a long story about the sea.", ""),
        options=GenerationOptions(max_tokens=2000), timeout_s=0.2,
    )  # fmt: skip
    reply = await handle_opinion(embedded, request)
    assert isinstance(reply, AgentError)
    assert reply.code == "timeout"
    again = await handle_opinion(
        embedded,
        OpinionRequest(
            **{**_fields(request), "timeout_s": 60.0, "options": GenerationOptions(max_tokens=8)}
        ),  # fmt: skip
    )
    assert isinstance(again, Completion)


def _fields(request: OpinionRequest) -> dict[str, object]:
    return {f: getattr(request, f) for f in request.__struct_fields__}


async def test_a_file_that_is_not_a_model_fails_to_load_with_a_clear_error(
    tmp_path: Path,
) -> None:
    """Not GGUF, or GGUF with garbage inside: ModelLoadError, never a crash."""
    runtime = EmbeddedRuntime(tmp_path, auto_pull=False)
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        await runtime.load(str(not_gguf))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(ModelLoadError):
        await runtime.load(str(broken))
    assert json.loads(json.dumps([s.status for s in runtime.statuses()])) == ["error", "error"]


async def test_a_check_first_review_on_the_real_model_writes_its_working_before_the_score(
    embedded: EmbeddedRuntime,
) -> None:
    """The grammar from the check-first schema makes the real model open its verdict
    with the justification; the score still parses (or a named invalid_output)."""
    request = ReviewRequest(
        session_id="t", member=TEST_MODEL, model=TEST_MODEL,
        messages=pairwise_messages("What is 2+2?", "Response A", "5", check_first=True),
        options=GenerationOptions(max_tokens=160, temperature=0), labels=["Response A"],
        check_first=True,
    )  # fmt: skip
    seen: list[str] = []
    reply = await handle_review(embedded, request, on_text=seen.append)
    assert "".join("".join(seen).split()).startswith('{"justification"')
    if isinstance(reply, AgentError):
        assert reply.code == "invalid_output"
    else:
        assert 1 <= reply.scores["Response A"] <= 10


async def test_a_call_runs_on_its_share_of_the_hosts_cores(
    models_dir: Path, test_model_path: Path, tmp_path: Path
) -> None:
    """Without batching too, a call runs on this process's share of the cores: half
    of them while another council process of the host generates, all of them after."""
    import llama_cpp

    runtime = EmbeddedRuntime(models_dir, auto_pull=False, cores_dir=tmp_path)
    options = GenerationOptions(temperature=0, max_tokens=8)
    try:
        await runtime.load(TEST_MODEL)
        ctx = runtime._llamas[TEST_MODEL]._ctx.ctx
        with generating_elsewhere(tmp_path):
            text, _ = await collect(runtime, options=options)
            assert text.strip()
            assert llama_cpp.llama_n_threads(ctx) == max(1, runtime.threads // 2)
        await collect(runtime, options=options)
        assert llama_cpp.llama_n_threads(ctx) == runtime.threads
    finally:
        await runtime.close()


async def test_closing_while_a_call_generates_stops_it_before_freeing_the_model(
    models_dir: Path, test_model_path: Path
) -> None:
    """A caller that goes away without closing its call leaves a thread decoding: the
    runtime stops it and waits for it before it frees the model (freed under the
    thread, the process crashed with a segmentation fault)."""
    runtime = EmbeddedRuntime(models_dir, auto_pull=False)
    await runtime.load(TEST_MODEL)
    stream = runtime.chat(TEST_MODEL, QUESTION, options=GenerationOptions(max_tokens=4000))
    first = await anext(stream)  # generating now; the stream is abandoned, not closed
    assert first.text or first.usage
    assert runtime._generating
    await runtime.close()
    assert not runtime._generating
    assert not runtime._llamas  # freed, once nothing decodes with it
    await stream.aclose()
