"""Concurrent calls to one real model decoded together (the embedded runtime's batch)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from conftest import TEST_MODEL
from helpers import generating_elsewhere, settled_agents
from nats.aio.msg import Msg

from council.agents.handlers import handle_review
from council.agents.runtimes.base import RuntimeFailure
from council.agents.runtimes.batching import MIN_SHARED
from council.agents.runtimes.cores import REFRESH_S
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.agents.runtimes.router import RoutedRuntime
from council.assembly import wiring
from council.bus import subjects
from council.bus.messages import (
    ChatMessage,
    GenerationOptions,
    OpinionRequest,
    ReviewRequest,
    ReviewResult,
    Usage,
)
from council.bus.transport.connection import connect
from council.bus.transport.server import EmbeddedNats
from council.chairman.gateway import BusAgents
from council.chairman.prompts import pairwise_messages

pytestmark = pytest.mark.model

BATCH = 3


@pytest.fixture(scope="module")
def cores_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cores")


@pytest.fixture(scope="module")
async def batched(
    models_dir: Path, test_model_path: Path, cores_dir: Path
) -> AsyncIterator[EmbeddedRuntime]:
    runtime = EmbeddedRuntime(
        models_dir, auto_pull=False, batch=BATCH, n_ctx=2048, cores_dir=cores_dir
    )
    await runtime.load(TEST_MODEL)
    yield runtime
    await runtime.close()


def asking(topic: str) -> list[ChatMessage]:
    return [ChatMessage("system", "You are helpful."), ChatMessage("user", f"Describe {topic}.")]


async def answer(
    runtime: EmbeddedRuntime, messages: list[ChatMessage], options: GenerationOptions
) -> tuple[str, Usage | None, int]:
    """The text, the usage and how many chunks carried text."""
    text, usage, pieces = [], None, 0
    async for chunk in runtime.chat(TEST_MODEL, messages, options=options):
        text.append(chunk.text)
        pieces += bool(chunk.text)
        usage = chunk.usage or usage
    return "".join(text), usage, pieces


async def test_concurrent_calls_each_answer_their_own_prompt(batched: EmbeddedRuntime) -> None:
    """Three calls decoded in one batch stream and count as a call alone does, and each
    answer is its own prompt's: no sequence sees another's tokens. (Not that each is
    token for token the answer it gets alone: llama.cpp's arithmetic differs between
    batch sizes, so a greedy choice between near-equal tokens may differ.)"""
    options = GenerationOptions(temperature=0, max_tokens=16)
    words = ["banana", "volcano", "telescope"]
    together = await asyncio.gather(
        *(
            answer(batched, [ChatMessage("user", f"Repeat this word exactly once: {w}")], options)
            for w in words
        )
    )
    for word, (text, usage, pieces) in zip(words, together, strict=True):
        assert word in text.lower()
        assert not [other for other in words if other != word and other in text.lower()]
        assert pieces > 1  # streamed, not one lump
        assert usage is not None
        assert usage.prompt_tokens > 5
        assert 0 < usage.completion_tokens <= 16


async def test_calls_that_begin_alike_evaluate_their_common_prefix_once(
    batched: EmbeddedRuntime,
) -> None:
    """A long system prompt shared by three calls: the later ones copy its state from
    the first instead of evaluating it, say so in their usage, and still answer their
    own question."""
    system = ChatMessage("system", "You are a member of a council. " * 12)
    options = GenerationOptions(temperature=0, max_tokens=12)
    words = ["banana", "volcano", "telescope"]
    results = await asyncio.gather(
        *(
            answer(batched, [system, ChatMessage("user", f"Say the word {w} once.")], options)
            for w in words
        )
    )
    usages = [usage for _, usage, _ in results]
    assert all(u is not None for u in usages)
    reused = sorted(u.prompt_reused for u in usages if u is not None)
    assert reused[0] == 0  # the first evaluates it all
    assert reused[1] >= MIN_SHARED
    assert reused[2] >= MIN_SHARED
    assert all(u.prompt_reused < u.prompt_tokens for u in usages if u is not None)
    for word, (text, _, _) in zip(words, results, strict=True):
        assert word in text.lower()


async def test_a_batched_review_follows_the_json_schema(batched: EmbeddedRuntime) -> None:
    """The schema becomes that call's grammar, beside calls without one."""
    messages = pairwise_messages("What is 2+2?", "Response A", "It is 4.")
    request = ReviewRequest(
        session_id="s", member="m", model=TEST_MODEL, messages=messages, labels=["Response A"]
    )
    free = answer(batched, asking("a tree"), GenerationOptions(temperature=0, max_tokens=30))
    review, (text, _, _) = await asyncio.gather(handle_review(batched, request), free)
    assert isinstance(review, ReviewResult), review
    assert 1 <= review.scores["Response A"] <= 10
    assert text.strip()
    assert not text.lstrip().startswith("{")  # the grammar was the review's alone


async def test_a_token_the_grammar_refuses_is_sampled_again_within_it(
    batched: EmbeddedRuntime,
) -> None:
    """Asked for a poem under a JSON schema, the model's own first choices are prose:
    each is refused and sampled again within the grammar, greedy and sampled alike,
    so the text is the schema's JSON."""
    schema = {
        "type": "object",
        "properties": {"word": {"type": "string", "maxLength": 12}},
        "required": ["word"],
    }
    poem = [ChatMessage("user", "Write a long poem about the sea.")]

    async def constrained(temperature: float) -> str:
        text = []
        options = GenerationOptions(temperature=temperature, seed=3, max_tokens=60)
        async for chunk in batched.chat(TEST_MODEL, poem, options=options, schema=schema):
            text.append(chunk.text)
        return "".join(text)

    for text in await asyncio.gather(constrained(0), constrained(0.8)):
        assert set(json.loads(text)) == {"word"}, text


async def a_full_batch_finishes(batched: EmbeddedRuntime) -> None:
    """As many short calls as the batch holds all finish: every sequence is free."""
    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                answer(batched, asking(t), GenerationOptions(temperature=0, max_tokens=12))
                for t in ("rain", "snow", "wind")
            )
        ),
        timeout=120,
    )
    assert all(usage is not None for _, usage, _ in results)


async def test_a_call_stopped_early_frees_its_place_in_the_batch(
    batched: EmbeddedRuntime,
) -> None:
    """Each of ``BATCH`` calls is abandoned after its first piece of text; as many calls
    again then all finish, so every sequence was given back."""
    long = GenerationOptions(temperature=0.7, seed=3, max_tokens=400)
    for i in range(BATCH):
        async for chunk in batched.chat(TEST_MODEL, asking(f"the number {i}"), options=long):
            if chunk.text:
                break
    await a_full_batch_finishes(batched)


async def test_a_call_the_chairman_cancels_over_the_bus_stops_generating(
    batched: EmbeddedRuntime, nats_server: EmbeddedNats
) -> None:
    """The chairman stops waiting for a long opinion once it is being written: the
    agent hears council.cancel, the generation stops and frees its slot, and as many
    calls as the batch holds then all finish."""
    agents_nc = await connect(nats_server.url, name="agents")
    chairman_nc = await connect(nats_server.url, name="chairman")
    agents = await wiring.start_agents(
        agents_nc, RoutedRuntime.serving(batched, [TEST_MODEL]), node="a1", heartbeat_s=0.5
    )
    gateway = BusAgents(chairman_nc)
    await gateway.start()
    written = asyncio.Event()

    async def on_delta(_: Msg) -> None:
        written.set()

    live = await chairman_nc.subscribe(subjects.live_session("t.s1"), cb=on_delta)
    try:
        request = OpinionRequest(
            session_id="t.s1", member=TEST_MODEL, model=TEST_MODEL, messages=asking("the sea"),
            options=GenerationOptions(temperature=0.7, seed=1, max_tokens=2000), timeout_s=300,
        )  # fmt: skip
        call = asyncio.create_task(gateway.opinion(request))
        await asyncio.wait_for(written.wait(), timeout=60)
        assert agents.in_flight == 1
        call.cancel()
        await settled_agents(agents)
        await a_full_batch_finishes(batched)
    finally:
        await live.unsubscribe()
        await gateway.stop()
        await agents.stop()
        await chairman_nc.close()
        await agents_nc.close()


async def test_a_prompt_longer_than_a_calls_context_is_a_runtime_failure(
    batched: EmbeddedRuntime,
) -> None:
    """Refused before it takes a place in the batch; the model goes on serving."""
    huge = [ChatMessage("user", "word " * 3000)]
    with pytest.raises(RuntimeFailure, match="context"):
        await answer(batched, huge, GenerationOptions(max_tokens=4))
    text, _, _ = await answer(batched, asking("a cat"), GenerationOptions(max_tokens=8))
    assert text.strip()


async def test_a_batch_runs_on_its_share_of_the_hosts_cores(
    batched: EmbeddedRuntime, cores_dir: Path
) -> None:
    """Another council process of the host generating: the batch decodes on half the
    cores (llama.cpp's context says so); that process dead, on all of them again."""
    import llama_cpp

    ctx = batched._engines[TEST_MODEL].ctx.ctx
    options = GenerationOptions(temperature=0, max_tokens=8)
    with generating_elsewhere(cores_dir), structlog.testing.capture_logs() as logs:
        text, _, _ = await answer(batched, asking("a lighthouse"), options)
        assert text.strip()
        assert llama_cpp.llama_n_threads(ctx) == max(1, batched.threads // 2)
    await asyncio.sleep(REFRESH_S)
    with structlog.testing.capture_logs() as later:
        await answer(batched, asking("a harbour"), options)
    assert llama_cpp.llama_n_threads(ctx) == batched.threads
    fitted = [e["threads"] for e in logs + later if e["event"] == "threads_fitted"]
    if batched.threads > 1:  # on one core there is nothing to divide
        assert fitted == [batched.threads // 2, batched.threads]
