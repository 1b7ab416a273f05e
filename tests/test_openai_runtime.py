"""The `openai` runtime against a real OpenAI-compatible server: llama-cpp-python's own
(its `server` extra) serving the test model, as a process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import MEMBERS, TEST_MODEL
from nats.aio.client import Client

from council.agents.handlers import handle_opinion, handle_review
from council.agents.runtimes.base import RuntimeOptions
from council.agents.runtimes.openai_compat import OpenAICompatRuntime
from council.agents.runtimes.router import build_runtime
from council.assembly.wiring import local_council
from council.bus.client.ask import follow, submit
from council.bus.errors import ModelLoadError, ModelNotFound
from council.bus.events import FinalAnswer
from council.bus.messages import (
    AgentError,
    Completion,
    GenerationOptions,
    OpinionRequest,
    Question,
    ReviewRequest,
    ReviewResult,
)
from council.bus.transport.connection import connect
from council.bus.transport.server import EmbeddedNats, free_port
from council.chairman.admission import Defaults
from council.chairman.config import CouncilConfig
from council.chairman.prompts import opinion_messages, pairwise_messages

pytestmark = [pytest.mark.model, pytest.mark.processes]


@pytest.fixture(scope="module")
def server_url(test_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` on the test model, on a free port."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "llama_cpp.server", "--model", str(test_model_path),
            "--model_alias", TEST_MODEL, "--port", str(port), "--n_ctx", "2048",
            # by default a new request interrupts the one streaming: a council's calls overlap
            "--interrupt_requests", "False",
        ],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
async def runtime(server_url: str) -> AsyncIterator[OpenAICompatRuntime]:
    runtime = OpenAICompatRuntime(server_url)
    deadline = time.monotonic() + 120
    while await runtime.listed() is None:  # the server loads its model first
        assert time.monotonic() < deadline, "llama_cpp.server did not start"
        await asyncio.sleep(0.5)
    yield runtime
    await runtime.close()


def opinion(question: str, max_tokens: int = 64) -> OpinionRequest:
    return OpinionRequest(
        session_id="s1", member=TEST_MODEL, model=TEST_MODEL,
        messages=opinion_messages(question, ""),
        options=GenerationOptions(temperature=0.0, seed=3, max_tokens=max_tokens),
    )  # fmt: skip


async def test_an_opinion_streams_its_text_and_counts_its_tokens(
    runtime: OpenAICompatRuntime,
) -> None:
    pieces: list[str] = []
    reply = await handle_opinion(runtime, opinion("What is 2 + 2?"), pieces.append)
    assert isinstance(reply, Completion), reply
    assert reply.text == "".join(pieces)
    assert len(pieces) > 1
    assert 0 < reply.usage.completion_tokens <= 64


async def test_a_review_gets_its_json_from_a_server_without_json_schema(
    runtime: OpenAICompatRuntime,
) -> None:
    """llama-cpp-python's server refuses ``json_schema``: the runtime falls back to its
    ``json_object`` form with the schema, and remembers it."""
    request = ReviewRequest(
        session_id="s1", member=TEST_MODEL, model=TEST_MODEL,
        messages=pairwise_messages("What is 2 + 2?", "Response A", "Final answer: 4"),
        labels=["Response A"], options=GenerationOptions(temperature=0.0, max_tokens=64),
    )  # fmt: skip
    reply = await handle_review(runtime, request)
    assert isinstance(reply, ReviewResult), reply
    assert 1 <= reply.scores["Response A"] <= 10
    assert runtime._schema_form[TEST_MODEL] == 1


async def test_unknown_model_unreachable_server_and_timeout_are_named(
    runtime: OpenAICompatRuntime,
) -> None:
    with pytest.raises(ModelNotFound, match=TEST_MODEL):
        await runtime.load("nosuchmodel")
    gone = OpenAICompatRuntime(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(ModelLoadError, match="no OpenAI-compatible server answers"):
        await gone.load(TEST_MODEL)
    await gone.close()
    hurried = OpenAICompatRuntime(runtime.base_url, timeout_s=0.05)
    hurried._status.set(TEST_MODEL, "ready")
    reply = await handle_opinion(hurried, opinion("Write a long story.", max_tokens=400))
    assert isinstance(reply, AgentError)
    assert reply.code in ("timeout", "runtime_error"), reply
    await hurried.close()


async def test_a_council_session_runs_on_the_openai_runtime_over_the_bus(
    server_url: str, runtime: OpenAICompatRuntime, nats_server: EmbeddedNats, nc: Client
) -> None:
    """`auto` offers the server's models once COUNCIL_OPENAI_BASE_URL is set; three
    persona members of the test model answer, review and synthesize through it."""
    options = RuntimeOptions(models_dir="/nonexistent", openai_base_url=server_url)
    routed = await build_runtime([TEST_MODEL], "auto", options)
    agents_nc = await connect(nats_server.url, name="agents")
    chairman_nc = await connect(nats_server.url, name="chairman")
    config = CouncilConfig(
        opinion_max_tokens=48, review_max_tokens=48, synthesis_max_tokens=64, conclude=False
    )
    try:
        async with local_council(
            agents_nc, chairman_nc, routed,
            Defaults(tuple(MEMBERS), TEST_MODEL, strategy="synthesize"), config,
        ):  # fmt: skip
            accepted = await submit(nc, Question(question="Name a colour."))
            events = [e async for e in follow(nc, accepted.session_id, timeout_s=300)]
        served = [(s.name, s.runtime) for s in routed.statuses()]
    finally:
        await chairman_nc.close()
        await agents_nc.close()
        await routed.close()
    final = events[-1]
    assert isinstance(final, FinalAnswer), final
    assert final.answer
    assert len(final.opinions) == len(MEMBERS)
    assert served == [(TEST_MODEL, "openai")]
