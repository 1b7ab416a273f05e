"""The Ollama runtime over real HTTP, against the Ollama-compatible test server."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import pytest
from conftest import TEST_MODEL
from ollama_compat import OllamaCompatServer

from council.agents.handlers import handle_opinion
from council.agents.runtimes.base import ChatChunk, RuntimeFailure
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.agents.runtimes.ollama import OllamaRuntime, list_ollama_models
from council.bus.errors import ModelNotFound
from council.bus.messages import ChatMessage, Completion, GenerationOptions, OpinionRequest

pytestmark = pytest.mark.model

OPTIONS = GenerationOptions(temperature=0.0, seed=7, max_tokens=32)
ASK = [ChatMessage("user", "Name three colours of the rainbow.")]
PAIRWISE_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
        "justification": {"type": "string"},
    },
    "required": ["score", "justification"],
}


@pytest.fixture
async def server(embedded: EmbeddedRuntime) -> AsyncIterator[OllamaCompatServer]:
    """An Ollama-compatible server on loopback serving the shared test model."""
    async with OllamaCompatServer(embedded, [TEST_MODEL]) as compat:
        yield compat


@pytest.fixture
async def runtime(server: OllamaCompatServer) -> AsyncIterator[OllamaRuntime]:
    ollama = OllamaRuntime(server.url, timeout_s=120.0)
    yield ollama
    await ollama.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _collect(runtime: OllamaRuntime, model: str, **kwargs: object) -> list[ChatChunk]:
    return [c async for c in runtime.chat(model, ASK, options=OPTIONS, **kwargs)]  # type: ignore[arg-type]


async def test_list_ollama_models_lists_the_served_model(server: OllamaCompatServer) -> None:
    """The server's model is listed under Ollama's name:tag form."""
    assert await list_ollama_models(server.url) == [f"{TEST_MODEL}:latest"]


async def test_list_ollama_models_returns_none_when_nothing_listens() -> None:
    """No server on the port: None, not an exception."""
    assert await list_ollama_models(f"http://127.0.0.1:{_free_port()}") is None


async def test_chat_streams_text_then_usage_and_sends_options(
    runtime: OllamaRuntime, server: OllamaCompatServer
) -> None:
    """Text arrives in several chunks, usage last; the server saw stream and options."""
    chunks = await _collect(runtime, TEST_MODEL)
    texts = [c.text for c in chunks if c.text]
    assert len(texts) > 1
    assert "".join(texts).strip()
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens > 0
    assert chunks[-1].usage.completion_tokens > 0
    [sent] = server.chat_requests()
    assert sent["model"] == TEST_MODEL
    assert sent["stream"] is True
    assert "format" not in sent
    assert sent["options"]["num_predict"] == OPTIONS.max_tokens
    assert sent["options"]["temperature"] == OPTIONS.temperature
    assert sent["options"]["seed"] == OPTIONS.seed


async def test_chat_with_schema_streams_json_with_an_integer_score(
    runtime: OllamaRuntime, server: OllamaCompatServer
) -> None:
    """A JSON-schema format is sent as-is and constrains the reply to parseable JSON."""
    chunks = await _collect(runtime, TEST_MODEL, schema=PAIRWISE_SCHEMA)
    verdict = json.loads("".join(c.text for c in chunks))
    assert isinstance(verdict["score"], int)
    assert server.chat_requests()[-1]["format"] == PAIRWISE_SCHEMA


async def test_load_unknown_model_raises_model_not_found(runtime: OllamaRuntime) -> None:
    """A model the server does not list is refused before any chat."""
    with pytest.raises(ModelNotFound) as caught:
        await runtime.load("nope")
    assert caught.value.known == [f"{TEST_MODEL}:latest"]


async def test_chat_on_a_model_the_server_404s_raises_runtime_failure(
    runtime: OllamaRuntime, server: OllamaCompatServer
) -> None:
    """A 404 from /api/chat (model removed after load) becomes RuntimeFailure."""
    runtime._status.set("gone", "ready")  # as if loaded
    with pytest.raises(RuntimeFailure, match="model 'gone' not found"):
        await _collect(runtime, "gone")
    assert [s.in_flight for s in runtime.statuses() if s.name == "gone"] == [0]
    assert server.chat_requests()[-1]["model"] == "gone"


async def test_handle_opinion_on_ollama_returns_a_completion(runtime: OllamaRuntime) -> None:
    """The agent handler answers through the Ollama runtime with text and usage."""
    request = OpinionRequest(
        session_id="s1", member="m1", model=TEST_MODEL, messages=ASK, options=OPTIONS
    )
    reply = await handle_opinion(runtime, request)
    assert isinstance(reply, Completion), reply
    assert reply.text
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0
