"""Picks a runtime per model: Ollama when its server lists the model, else embedded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog

from council.agents.catalogue import CATALOGUE, is_gguf_path
from council.agents.runtimes.base import ChatChunk, Runtime
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.agents.runtimes.ollama import OllamaRuntime, list_ollama_models
from council.agents.runtimes.scripted import ScriptedRuntime
from council.bus.errors import ModelNotFound
from council.bus.messages import ChatMessage, GenerationOptions, ModelStatus

log = structlog.get_logger()

RUNTIME_CHOICES = ("auto", "ollama", "embedded", "scripted")


class RoutedRuntime:
    """One Runtime over several, each model bound to the runtime that serves it."""

    name = "routed"

    def __init__(self, routes: dict[str, Runtime]) -> None:
        self.routes = routes

    @classmethod
    def serving(cls, runtime: Runtime, models: list[str]) -> RoutedRuntime:
        """One runtime serving all these models."""
        return cls(dict.fromkeys(models, runtime))

    def runtime_of(self, model: str) -> Runtime:
        try:
            return self.routes[model]
        except KeyError:
            raise ModelNotFound(model, sorted(self.routes)) from None

    def statuses(self) -> list[ModelStatus]:
        seen: dict[str, ModelStatus] = {}
        for model, runtime in self.routes.items():
            for status in runtime.statuses():
                seen[status.name] = status
            seen.setdefault(model, ModelStatus(name=model, runtime=runtime.name, status="loading"))
        return [seen[m] for m in self.routes]

    async def load(self, model: str) -> None:
        await self.runtime_of(model).load(model)

    def chat(
        self,
        model: str,
        messages: list[ChatMessage],
        *,
        options: GenerationOptions,
        schema: dict[str, Any] | None = None,
    ) -> AsyncIterator[ChatChunk]:
        return self.runtime_of(model).chat(model, messages, options=options, schema=schema)

    async def close(self) -> None:
        for runtime in {id(r): r for r in self.routes.values()}.values():
            await runtime.close()


async def build_runtime(
    models: list[str],
    *,
    runtime: str,
    ollama_host: str,
    models_dir: Path,
    threads: int | None,
    n_ctx: int,
    batch: int = 0,
    scripted_delay_s: float = 0.0,
) -> RoutedRuntime:
    """Bind each model to a runtime; raise ModelNotFound for a model nobody serves."""
    if runtime == "scripted":
        scripted = ScriptedRuntime(models, delay_s=scripted_delay_s)
        return RoutedRuntime({m: scripted for m in models})
    listed = await list_ollama_models(ollama_host) if runtime in ("auto", "ollama") else None
    if runtime == "ollama" and listed is None:
        raise ModelNotFound(models[0] if models else "?", [])
    ollama_runtime = OllamaRuntime(ollama_host) if listed is not None else None
    embedded: EmbeddedRuntime | None = None
    routes: dict[str, Runtime] = {}
    for model in models:
        if ollama_runtime and listed and (model in listed or f"{model}:latest" in listed):
            routes[model] = ollama_runtime
        elif runtime != "ollama" and (model in CATALOGUE or is_gguf_path(model)):
            embedded = embedded or EmbeddedRuntime(
                models_dir, threads=threads, n_ctx=n_ctx, batch=batch
            )
            routes[model] = embedded
        else:
            known = sorted(set(CATALOGUE) | set(listed or []))
            raise ModelNotFound(model, known)
        log.info("model_routed", model=model, runtime=routes[model].name)
    return RoutedRuntime(routes)
