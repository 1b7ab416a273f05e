"""Models served by an Ollama server, through the official ``ollama`` AsyncClient."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
import ollama
import structlog

from council.agents.runtimes.base import (
    Capacity,
    ChatChunk,
    Offer,
    RuntimeFailure,
    RuntimeKind,
    RuntimeOptions,
    Statuses,
)
from council.bus.errors import ModelLoadError, ModelNotFound
from council.bus.messages import ChatMessage, GenerationOptions, ModelStatus, Usage

log = structlog.get_logger()

DEFAULT_HOST = "http://127.0.0.1:11434"


async def list_ollama_models(host: str, timeout_s: float = 1.0) -> list[str] | None:
    """The models an Ollama server at ``host`` lists, or None when none answers."""
    try:
        async with ollama.AsyncClient(host=host, timeout=timeout_s) as client:
            listed = await client.list()
    except (httpx.HTTPError, ollama.ResponseError, OSError, ValueError):
        return None
    return [m.model for m in listed.models if m.model]


class OllamaRuntime:
    name = "ollama"

    def __init__(self, host: str = DEFAULT_HOST, *, timeout_s: float = 600.0) -> None:
        self.host = host
        self._client = ollama.AsyncClient(host=host, timeout=timeout_s)
        self._status = Statuses(self.name)

    def statuses(self) -> list[ModelStatus]:
        return self._status.all()

    def capacity(self) -> Capacity:
        return Capacity()  # the Ollama server schedules its own calls

    async def load(self, model: str) -> None:
        if model in self._status:
            return
        listed = await list_ollama_models(self.host)
        if listed is None:
            raise ModelLoadError(model, f"no Ollama server answers at {self.host}")
        if model not in listed and f"{model}:latest" not in listed:
            raise ModelNotFound(model, listed)
        self._status.set(model, "ready")

    async def chat(
        self,
        model: str,
        messages: list[ChatMessage],
        *,
        options: GenerationOptions,
        schema: dict[str, Any] | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        await self.load(model)
        settings: dict[str, Any] = {
            "temperature": options.temperature,
            "num_predict": options.max_tokens,
        }
        if options.seed is not None:
            settings["seed"] = options.seed
        with self._status.calling(model):
            try:
                stream = await self._client.chat(
                    model=model,
                    messages=[{"role": m.role, "content": m.content} for m in messages],
                    stream=True,
                    format=schema,
                    options=settings,
                )
                async for part in stream:
                    if part.message and part.message.content:
                        yield ChatChunk(part.message.content)
                    if part.done:
                        used = Usage(part.prompt_eval_count or 0, part.eval_count or 0)
                        yield ChatChunk(usage=used)
            except (httpx.HTTPError, ollama.ResponseError, OSError, ValueError) as exc:
                raise RuntimeFailure(f"ollama {model}: {exc}") from exc

    async def close(self) -> None:
        await self._client.close()


async def _offer(options: RuntimeOptions, models: list[str]) -> Offer | None:
    listed = await list_ollama_models(options.ollama_host)
    if listed is None:
        return None
    return Offer(
        OllamaRuntime(options.ollama_host),
        lambda m: m in listed or f"{m}:latest" in listed,
        listed,
    )


KIND = RuntimeKind(
    "ollama", "the models an Ollama server lists (COUNCIL_OLLAMA_HOST)", _offer, order=10
)
