"""The one seam between council and a model: streamed text, then usage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from council.bus.messages import ChatMessage, GenerationOptions, ModelStatus, Usage


@dataclass(frozen=True)
class ChatChunk:
    """A piece of streamed text; the last chunk of a call carries ``usage``."""

    text: str = ""
    usage: Usage | None = None


@dataclass
class ChatCall:
    """What a runtime was asked, kept by the scripted runtime for tests."""

    model: str
    messages: list[ChatMessage]
    options: GenerationOptions
    schema: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class RuntimeFailure(Exception):
    """The model could not produce an answer (crash, bad output, server error)."""


class Runtime(Protocol):
    name: str

    def statuses(self) -> list[ModelStatus]: ...

    async def load(self, model: str) -> None:
        """Make ``model`` ready, or raise ModelNotFound / ModelLoadError."""
        ...

    def chat(
        self,
        model: str,
        messages: list[ChatMessage],
        *,
        options: GenerationOptions,
        schema: dict[str, Any] | None = None,
    ) -> AsyncIterator[ChatChunk]: ...

    async def close(self) -> None: ...
