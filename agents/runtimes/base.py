"""The one seam between council and a model: streamed text, then usage.

Each runtime module also offers itself as a ``RuntimeKind`` named ``KIND``:
the router finds them there, so adding a runtime is adding one module.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from council.bus.messages import ChatMessage, GenerationOptions, ModelStatus, Usage
from council.bus.tunables import tunable

Progress = Callable[[str, int, int], None]
"""A long step's progress: what (e.g. "qwen2.5-coder-1.5b download"), done, of how many."""


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


@dataclass(frozen=True)
class Capacity:
    """How many calls a runtime generates at once on this host, and with how many
    threads each (0 and 0 for a runtime whose models run elsewhere)."""

    slots: int = 0
    threads: int = 0


class Runtime(Protocol):
    name: str

    def statuses(self) -> list[ModelStatus]: ...

    def capacity(self) -> Capacity: ...

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
    ) -> AsyncGenerator[ChatChunk, None]: ...

    async def close(self) -> None: ...


class Statuses:
    """A runtime's models as heartbeats show them: loading, ready or failed, and the
    calls in flight on each."""

    def __init__(self, runtime: str) -> None:
        self.runtime = runtime
        self._models: dict[str, ModelStatus] = {}

    def __contains__(self, model: str) -> bool:
        return model in self._models

    def all(self) -> list[ModelStatus]:
        return list(self._models.values())

    def set(
        self, model: str, status: Literal["loading", "ready", "error"], detail: str = ""
    ) -> None:
        current = self._models.setdefault(model, ModelStatus(name=model, runtime=self.runtime))
        current.status = status
        current.detail = detail

    @contextmanager
    def calling(self, model: str) -> Iterator[None]:
        """One call in flight on ``model`` for the duration."""
        current = self._models[model]
        current.in_flight += 1
        try:
            yield
        finally:
            current.in_flight -= 1


@dataclass(frozen=True)
class RuntimeOptions:
    """What a runtime may be built from: the settings of the agents' runtimes."""

    runtime: str = tunable(
        "auto",
        "COUNCIL_RUNTIME",
        "auto (each model to the first runtime that serves it: ollama, openai, then embedded), "
        "or one runtime by name (an unknown name lists them)",
    )
    ollama_host: str = tunable(
        "http://127.0.0.1:11434", "COUNCIL_OLLAMA_HOST", "Ollama server for the ollama runtime"
    )
    openai_base_url: str = tunable(
        "",
        "COUNCIL_OPENAI_BASE_URL",
        "an OpenAI-compatible server (http://host:port/v1) whose models agents may serve",
    )
    openai_api_key: str = tunable("", "COUNCIL_OPENAI_API_KEY", "the key that server asks for")
    models_dir: str = tunable(
        "",
        "COUNCIL_MODELS_DIR",
        "where pulled GGUF models are stored",
        shown="~/.cache/council/models",
    )
    threads: int = tunable(
        0,
        "COUNCIL_THREADS",
        "generation threads per call, at most (the host's share of the cores may be fewer)",
        shown="0 (all cores)",
    )
    n_ctx: int = tunable(4096, "COUNCIL_N_CTX", "context window of embedded models")
    batch: int = tunable(
        6,
        "COUNCIL_BATCH",
        "embedded runtime: concurrent calls to one model decoded together, up to this "
        "many (0: one call at a time)",
    )
    share_cores: bool = tunable(
        True,
        "COUNCIL_SHARE_CORES",
        "embedded runtime: the council processes of this host divide its cores among those "
        "generating, so a call alone has every core (1/0; see docs/performance.md)",
    )
    scripted_delay_ms: float = tunable(
        0.0, "COUNCIL_SCRIPTED_DELAY_MS", "per-call delay of the scripted runtime"
    )

    @property
    def models_path(self) -> Path:
        if self.models_dir:
            return Path(self.models_dir).expanduser()
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(cache) / "council" / "models"


@dataclass(frozen=True)
class Offer:
    """A runtime that is available here, and which models it can serve."""

    runtime: Runtime
    serves: Callable[[str], bool]
    known: list[str]
    """What it could serve, for the error that names a model nobody serves."""


@dataclass(frozen=True)
class RuntimeKind:
    name: str
    summary: str
    offer: Callable[[RuntimeOptions, list[str]], Awaitable[Offer | None]]
    """Build the runtime for these models, or None when it is not available here."""
    order: int
    """``auto`` asks the kinds in this order, each model going to the first that serves it."""
    auto: bool = True
    prepare: Callable[[RuntimeOptions, list[str], Progress], None] | None = None
    """Fetch what these models need before they can be served, reporting progress
    (the embedded kind pulls catalogue weights); `council up` runs it before the agents."""
