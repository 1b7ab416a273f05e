"""A deterministic, instant runtime for state-machine tests and orchestration benchmarks.

Replies come from ``enqueue`` (per model, first in first out) or, when none is
queued, from a reply made from the prompt: text for chat, valid JSON for a
schema. Every call is kept in ``history``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import defaultdict, deque
from collections.abc import AsyncGenerator
from typing import Any

from council.agents.runtimes.base import (
    Capacity,
    ChatCall,
    ChatChunk,
    Offer,
    RuntimeFailure,
    RuntimeKind,
    RuntimeOptions,
)
from council.bus.errors import ModelNotFound
from council.bus.messages import ChatMessage, GenerationOptions, ModelStatus, Usage

HANG = object()
"""Enqueue this to make a call never finish (a model that times out)."""


class ScriptedRuntime:
    name = "scripted"

    def __init__(
        self,
        models: list[str],
        *,
        delay_s: float = 0.0,
        pace_s: float = 0.0,
        history_limit: int = 10_000,
    ) -> None:
        """``delay_s`` before a reply's first word; ``pace_s`` between its words (a model
        writing, for what streams them)."""
        self.models = list(models)
        self.delay_s = delay_s
        self.pace_s = pace_s
        self.history: deque[ChatCall] = deque(maxlen=history_limit)
        self._queued: dict[str, deque[object]] = defaultdict(deque)

    def enqueue(self, model: str, *replies: object) -> None:
        """Queue replies for ``model``: a str, an Exception to raise, or HANG."""
        self._queued[model].extend(replies)

    def statuses(self) -> list[ModelStatus]:
        return [ModelStatus(name=m, runtime=self.name) for m in self.models]

    def capacity(self) -> Capacity:
        return Capacity()

    async def load(self, model: str) -> None:
        if model not in self.models:
            raise ModelNotFound(model, self.models)

    async def chat(
        self,
        model: str,
        messages: list[ChatMessage],
        *,
        options: GenerationOptions,
        schema: dict[str, Any] | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        await self.load(model)
        self.history.append(ChatCall(model, list(messages), options, schema))
        reply = self._queued[model].popleft() if self._queued[model] else None
        if reply is HANG:
            await asyncio.Event().wait()
        if isinstance(reply, BaseException):
            raise reply
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = reply if isinstance(reply, str) else _made_up_reply(model, messages, schema)
        words = text.split(" ")
        for i, word in enumerate(words):
            if i and self.pace_s:
                await asyncio.sleep(self.pace_s)
            yield ChatChunk(word if i == 0 else " " + word)
        prompt_tokens = sum(len(m.content.split()) for m in messages)
        yield ChatChunk(usage=Usage(prompt_tokens, len(words)))

    async def close(self) -> None:
        return None


def _made_up_reply(model: str, messages: list[ChatMessage], schema: dict[str, Any] | None) -> str:
    digest = hashlib.sha256((model + messages[-1].content).encode()).digest()
    if schema is None:
        return f"{model} answers: reply {digest.hex()[:8]}."
    properties = schema.get("properties", {})
    if "score" in properties:
        return json.dumps({"score": 1 + digest[0] % 10, "justification": f"by {model}"})
    if "ranking" in properties:
        labels = list(properties["ranking"].get("items", {}).get("enum", []))
        labels.sort(key=lambda label: hashlib.sha256((model + label).encode()).digest())
        return json.dumps({"ranking": labels, "justification": f"by {model}"})
    raise RuntimeFailure(f"scripted runtime cannot fill schema {schema}")


async def _offer(options: RuntimeOptions, models: list[str]) -> Offer:
    runtime = ScriptedRuntime(models, delay_s=options.scripted_delay_ms / 1000)
    return Offer(runtime, lambda m: True, models)


KIND = RuntimeKind(
    "scripted", "made-up replies, no model (tests and benchmarks)", _offer, order=90, auto=False
)
