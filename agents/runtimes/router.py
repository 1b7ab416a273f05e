"""Which runtime serves each model: the runtimes found in this package, asked in order.

Every module here that offers a ``KIND`` (a ``base.RuntimeKind``) is a runtime
that `COUNCIL_RUNTIME` can name; ``auto`` gives each model to the first of the
automatic kinds that is available and serves it (Ollama when its server lists
the model, else embedded).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncGenerator
from functools import cache
from typing import Any

import structlog

import council.agents.runtimes as package
from council.agents.runtimes.base import (
    Capacity,
    ChatChunk,
    Offer,
    Progress,
    Runtime,
    RuntimeKind,
    RuntimeOptions,
)
from council.bus.errors import ModelNotFound
from council.bus.messages import ChatMessage, GenerationOptions, ModelStatus

log = structlog.get_logger()

AUTO = "auto"


@cache
def kinds() -> dict[str, RuntimeKind]:
    """Every runtime kind in this package, in ``auto``'s order."""
    found: list[RuntimeKind] = []
    for module in pkgutil.iter_modules(package.__path__):
        kind = getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "KIND", None)
        if isinstance(kind, RuntimeKind):
            found.append(kind)
    return {k.name: k for k in sorted(found, key=lambda k: k.order)}


def choices() -> list[str]:
    return [AUTO, *kinds()]


class RoutedRuntime:
    """One Runtime over several, each model bound to the runtime that serves it."""

    name = "routed"

    def __init__(self, routes: dict[str, Runtime]) -> None:
        self.routes = routes

    @classmethod
    def serving(cls, runtime: Runtime, models: list[str]) -> RoutedRuntime:
        """One runtime serving all these models."""
        return cls(dict.fromkeys(models, runtime))

    @property
    def models(self) -> list[str]:
        return list(self.routes)

    def _distinct(self) -> list[Runtime]:
        return list({id(r): r for r in self.routes.values()}.values())

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

    def capacity(self) -> Capacity:
        held = [r.capacity() for r in self._distinct()]
        return Capacity(
            slots=sum(c.slots for c in held), threads=max((c.threads for c in held), default=0)
        )

    async def load(self, model: str) -> None:
        await self.runtime_of(model).load(model)

    def chat(
        self,
        model: str,
        messages: list[ChatMessage],
        *,
        options: GenerationOptions,
        schema: dict[str, Any] | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        return self.runtime_of(model).chat(model, messages, options=options, schema=schema)

    async def close(self) -> None:
        for runtime in self._distinct():
            await runtime.close()


def asked(runtime: str) -> list[RuntimeKind]:
    """The kinds a `COUNCIL_RUNTIME` value names, in order; ValueError for an unknown one."""
    if runtime == AUTO:
        return [k for k in kinds().values() if k.auto]
    if runtime not in kinds():
        raise ValueError(f"runtime {runtime!r}: choose one of {', '.join(choices())}")
    return [kinds()[runtime]]


def prepare(models: list[str], runtime: str, options: RuntimeOptions, progress: Progress) -> None:
    """Let each kind fetch what it needs for these models before it is asked to serve them."""
    for kind in asked(runtime):
        if kind.prepare:
            kind.prepare(options, models, progress)


async def build_runtime(models: list[str], runtime: str, options: RuntimeOptions) -> RoutedRuntime:
    """Bind each model to a runtime; raise ModelNotFound for a model nobody serves."""
    offers: list[Offer] = [o for k in asked(runtime) if (o := await k.offer(options, models))]
    routes: dict[str, Runtime] = {}
    try:
        for model in models:
            offer = next((o for o in offers if o.serves(model)), None)
            if offer is None:
                raise ModelNotFound(model, sorted({m for o in offers for m in o.known}))
            routes[model] = offer.runtime
            log.info("model_routed", model=model, runtime=offer.runtime.name)
    finally:
        used = {id(r) for r in routes.values()}
        for unused in (o.runtime for o in offers if id(o.runtime) not in used):
            await unused.close()
    return RoutedRuntime(routes)
