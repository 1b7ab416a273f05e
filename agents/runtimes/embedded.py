"""GGUF models in-process through llama-cpp-python.

A ``Llama`` object is not safe for concurrent calls, and two cores do not get
faster with more generation threads than cores: every call takes one of
``slots`` generation slots (cores // threads) and its model's lock, and runs in
a worker thread so the event loop keeps serving the bus.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import structlog

from council.agents.catalogue import CATALOGUE, is_gguf_path
from council.agents.pull import pull
from council.agents.runtimes.base import ChatChunk, RuntimeFailure
from council.bus.errors import ModelLoadError, ModelNotFound
from council.bus.messages import ChatMessage, GenerationOptions, ModelStatus, Usage

log = structlog.get_logger()

_DONE = object()


def resolve_model_path(model: str, models_dir: Path, *, auto_pull: bool) -> Path:
    """A catalogue name (pulled if allowed) or a local .gguf path → a file to load."""
    if model in CATALOGUE:
        entry = CATALOGUE[model]
        if entry.installed(models_dir):
            return entry.path(models_dir)
        if not auto_pull:
            raise ModelLoadError(model, f"not pulled yet: run `council models pull {model}`")
        log.info("model_pull_started", model=model, size_mb=entry.size_bytes // 2**20)
        return pull(entry, models_dir)
    if is_gguf_path(model):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelLoadError(model, f"no such file: {path}")
        return path
    raise ModelNotFound(model, sorted(CATALOGUE))


def _check_gguf(model: str, path: Path) -> None:
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelLoadError(model, f"{path} is not a GGUF file")


class EmbeddedRuntime:
    name = "embedded"

    def __init__(
        self,
        models_dir: Path,
        *,
        n_ctx: int = 4096,
        threads: int | None = None,
        auto_pull: bool = True,
    ) -> None:
        cores = os.cpu_count() or 1
        self.models_dir = models_dir
        self.n_ctx = n_ctx
        self.threads = max(1, min(threads or cores, cores))
        self.slots = max(1, cores // self.threads)
        self.auto_pull = auto_pull
        self._llamas: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._status: dict[str, ModelStatus] = {}
        self._slots = asyncio.Semaphore(self.slots)

    def statuses(self) -> list[ModelStatus]:
        return list(self._status.values())

    async def load(self, model: str) -> None:
        if model in self._llamas:
            return
        lock = self._locks.setdefault(model, asyncio.Lock())
        async with lock:
            if model in self._llamas:
                return
            self._status[model] = ModelStatus(name=model, runtime=self.name, status="loading")
            try:
                self._llamas[model] = await asyncio.to_thread(self._load_blocking, model)
            except Exception as exc:
                self._status[model].status = "error"
                self._status[model].detail = str(exc)
                raise
            self._status[model].status = "ready"

    def _load_blocking(self, model: str) -> Any:
        path = resolve_model_path(model, self.models_dir, auto_pull=self.auto_pull)
        _check_gguf(model, path)
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelLoadError(model, f"llama-cpp-python is not installed: {exc}") from exc
        started = time.perf_counter()
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=self.n_ctx,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                verbose=False,
            )
        except Exception as exc:  # llama-cpp raises ValueError on a bad file
            raise ModelLoadError(model, str(exc)) from exc
        log.info("model_loaded", model=model, path=str(path), seconds=time.perf_counter() - started)
        return llama

    async def chat(
        self,
        model: str,
        messages: list[ChatMessage],
        *,
        options: GenerationOptions,
        schema: dict[str, Any] | None = None,
    ) -> AsyncIterator[ChatChunk]:
        await self.load(model)
        llama = self._llamas[model]
        status = self._status[model]
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        async with self._locks[model], self._slots:
            status.in_flight += 1
            worker = asyncio.create_task(
                asyncio.to_thread(_generate, llama, messages, options, schema, emit, stop)
            )
            try:
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, BaseException):
                        raise RuntimeFailure(f"{model}: {item}") from item
                    assert isinstance(item, ChatChunk)
                    yield item
            finally:
                stop.set()
                status.in_flight -= 1
                # The model stays locked until its thread has really stopped.
                await asyncio.shield(worker)

    async def close(self) -> None:
        for llama in self._llamas.values():
            llama.close()
        self._llamas.clear()


def _generate(
    llama: Any,
    messages: list[ChatMessage],
    options: GenerationOptions,
    schema: dict[str, Any] | None,
    emit: Callable[[object], None],
    stop: threading.Event,
) -> None:
    """Runs in a worker thread; reports chunks, an exception, then _DONE."""
    tokens = _TokenCounter()
    try:
        stream = llama.create_chat_completion(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            stream=True,
            temperature=options.temperature,
            seed=options.seed if options.seed is not None else -1,
            max_tokens=options.max_tokens,
            response_format={"type": "json_object", "schema": schema} if schema else None,
            logits_processor=[tokens],
        )
        for chunk in stream:
            if stop.is_set():
                stream.close()
                break
            text = chunk["choices"][0]["delta"].get("content") or ""
            if text:
                emit(ChatChunk(text))
        emit(ChatChunk(usage=Usage(tokens.prompt, tokens.completion)))
    except Exception as exc:
        emit(exc)
    finally:
        emit(_DONE)


class _TokenCounter:
    """A pass-through logits processor: llama.cpp calls it once per sampled token with
    every token so far, so its first call sees exactly the prompt as templated."""

    def __init__(self) -> None:
        self.prompt = 0
        self.completion = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.completion == 0:
            self.prompt = len(input_ids)
        self.completion += 1
        return scores
