"""A small Ollama-API-compatible HTTP server backed by the embedded runtime.

No Ollama binary can be installed on the machines that run these tests, so this
is how the Ollama runtime is tested: the official ``ollama`` client talks real
HTTP to this server on loopback, and the server answers as Ollama's API docs
describe (docs.ollama.com/api: ``/api/tags``, ``/api/chat``, ``/api/version``,
errors). Model names follow Ollama's ``model:tag`` convention, the tag
defaulting to ``latest``; ``/api/chat`` streams NDJSON unless ``stream`` is
false, the last object carrying ``done: true``, ``done_reason`` and counts and
durations (in nanoseconds); errors are ``{"error": "..."}`` with a status code,
or an ``{"error": ...}`` line once a stream has started.

Only what council uses is implemented; tools, images and thinking are not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from council.agents.catalogue import CATALOGUE
from council.agents.runtimes.base import RuntimeFailure
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.bus.messages import ChatMessage, GenerationOptions

VERSION = "0.12.0"
"""The Ollama version this server claims to be on ``/api/version``."""

JSON_MODE_SCHEMA: dict[str, Any] = {"type": "object"}
"""What ``format: "json"`` means: any JSON object."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Received:
    """One request as the server received it; ``body`` is the parsed JSON, if any."""

    method: str
    path: str
    body: Any = None


def _tagged(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class OllamaCompatServer:
    """Serves ``models`` (embedded-runtime names) over Ollama's HTTP API on loopback."""

    def __init__(self, runtime: EmbeddedRuntime, models: Iterable[str]) -> None:
        self.runtime = runtime
        self.models = {_tagged(m): m for m in models}
        """Ollama name (``name:tag``) → the embedded runtime's model name."""
        self.requests: list[Received] = []
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> OllamaCompatServer:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/", self._root)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/chat", self._chat)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OllamaCompatServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def chat_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every ``POST /api/chat`` received, oldest first."""
        return [r.body for r in self.requests if r.path == "/api/chat"]

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()  # aiohttp caches it for the handler
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        self.requests.append(Received(request.method, request.path, body))
        return await handler(request)

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [self._summary(n, m) for n, m in self.models.items()]})

    def _summary(self, name: str, model: str) -> dict[str, Any]:
        entry = CATALOGUE.get(model)
        digest = entry.sha256 if entry else hashlib.sha256(model.encode()).hexdigest()
        return {
            "name": name,
            "model": name,
            "modified_at": _now(),
            "size": entry.size_bytes if entry else 0,
            "digest": digest,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": entry.family if entry else "",
                "families": [entry.family] if entry else [],
                "parameter_size": entry.parameters if entry else "",
                "quantization_level": entry.quantization if entry else "",
            },
        }

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError as exc:
            return _error(400, f"invalid JSON: {exc}")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        name = body.get("model")
        if not name:
            return _error(400, "model is required")
        model = self.models.get(_tagged(name))
        if model is None:
            return _error(404, f"model '{name}' not found")
        fmt = body.get("format")
        if fmt and not (fmt == "json" or isinstance(fmt, dict)):
            return _error(400, f"invalid format: {fmt!r}")
        schema = JSON_MODE_SCHEMA if fmt == "json" else fmt or None
        options = self._options(body.get("options") or {})
        messages = [
            ChatMessage(m.get("role", "user"), m.get("content") or "")
            for m in body.get("messages") or []
        ]
        call = _Generation(self.runtime, model, messages, options, schema)
        if body.get("stream", True):
            return await self._stream(request, name, call)
        try:
            text = "".join([piece async for piece in call.pieces()])
        except RuntimeFailure as exc:
            return _error(500, str(exc))
        return web.json_response(
            {"model": name, "created_at": _now(), **call.message(text), **call.final()}
        )

    def _options(self, given: dict[str, Any]) -> GenerationOptions:
        """Ollama options → council's; Ollama's defaults where one is absent."""
        predict = given.get("num_predict")
        return GenerationOptions(
            temperature=float(given.get("temperature", 0.8)),
            seed=given.get("seed"),
            max_tokens=predict if predict and predict > 0 else self.runtime.n_ctx,
        )

    async def _stream(
        self, request: web.Request, name: str, call: _Generation
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)

        async def line(obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"model": name, "created_at": _now(), **obj}).encode())
            await response.write(b"\n")

        try:
            async for piece in call.pieces():
                await line({**call.message(piece), "done": False})
            await line({**call.message(""), **call.final()})
        except RuntimeFailure as exc:
            await response.write(json.dumps({"error": str(exc)}).encode() + b"\n")
        await response.write_eof()
        return response


class _Generation:
    """One chat call on the embedded runtime, timed the way Ollama reports it."""

    def __init__(
        self,
        runtime: EmbeddedRuntime,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions,
        schema: dict[str, Any] | None,
    ) -> None:
        self.runtime = runtime
        self.model = model
        self.messages = messages
        self.options = options
        self.schema = schema
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.started = time.perf_counter_ns()
        self.first = 0
        self.ended = 0

    async def pieces(self) -> AsyncIterator[str]:
        """Yield the streamed text; counts and times are set when it ends."""
        chunks = self.runtime.chat(
            self.model, self.messages, options=self.options, schema=self.schema
        )
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if not self.first:
                    self.first = time.perf_counter_ns()
                if chunk.text:
                    yield chunk.text
                if chunk.usage:
                    self.prompt_tokens = chunk.usage.prompt_tokens
                    self.completion_tokens = chunk.usage.completion_tokens
        self.ended = time.perf_counter_ns()

    @staticmethod
    def message(content: str) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": content}}

    def final(self) -> dict[str, Any]:
        """The statistics Ollama puts on the last object (``done: true``)."""
        first = self.first or self.ended
        length = self.completion_tokens >= self.options.max_tokens
        return {
            "done": True,
            "done_reason": "length" if length else "stop",
            "total_duration": self.ended - self.started,
            "load_duration": 0,  # the model is loaded before the server starts
            "prompt_eval_count": self.prompt_tokens,
            "prompt_eval_duration": first - self.started,
            "eval_count": self.completion_tokens,
            "eval_duration": self.ended - first,
        }
