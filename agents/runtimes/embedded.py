"""GGUF models in-process through llama-cpp-python.

A ``Llama`` object is not safe for concurrent calls, and two cores do not get
faster with more generation threads than cores: every call takes one of
``slots`` generation slots (cores // threads) and its model's lock, and runs in
a worker thread so the event loop keeps serving the bus.

With ``batch`` > 0, concurrent calls to one model are decoded together instead
(``batching.BatchedModel``, up to ``batch`` at once, all threads); the models of
one runtime take turns step by step, so they never compete for the cores.

The council processes of one host divide its cores among those generating
(``cores.py``, with ``cores_dir``): a call runs on this process's share, at most
``threads``, and a batch re-fits its threads as other processes start and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from council.agents.catalogue import CATALOGUE, is_gguf_path
from council.agents.pull import pull, pull_named
from council.agents.runtimes.base import (
    Capacity,
    ChatChunk,
    Offer,
    Progress,
    RuntimeFailure,
    RuntimeKind,
    RuntimeOptions,
    Statuses,
)
from council.agents.runtimes.batching import BatchedModel
from council.agents.runtimes.cores import HostCores
from council.bus.errors import ModelLoadError, ModelNotFound
from council.bus.messages import ChatMessage, GenerationOptions, ModelStatus, Usage

log = structlog.get_logger()

_DONE = object()
CORES_DIR = ".cores"
"""In the models directory: the council processes that share it divide the cores."""


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
        batch: int = 0,
        cores_dir: Path | None = None,
    ) -> None:
        """``cores_dir``: shared by the host's council processes, which divide its
        cores among those generating (None: this runtime assumes it has them all)."""
        cores = os.cpu_count() or 1
        self.models_dir = models_dir
        self.n_ctx = n_ctx
        self.threads = max(1, min(threads or cores, cores))
        self.batch = batch
        self.slots = batch or max(1, cores // self.threads)
        self.auto_pull = auto_pull
        self._llamas: dict[str, Any] = {}
        self._engines: dict[str, BatchedModel] = {}
        self._turns = threading.Lock()
        self._cores = HostCores(cores_dir, cores)
        self._locks: dict[str, asyncio.Lock] = {}
        self._status = Statuses(self.name)
        self._slots = asyncio.Semaphore(self.slots)
        self._generating: dict[asyncio.Task[None], _Feed] = {}
        """Calls whose thread is generating, one-at-a-time path: ``close`` waits for them."""

    def statuses(self) -> list[ModelStatus]:
        return self._status.all()

    def capacity(self) -> Capacity:
        return Capacity(slots=self.slots, threads=self.threads)

    async def load(self, model: str) -> None:
        if model in self._llamas:
            return
        lock = self._locks.setdefault(model, asyncio.Lock())
        async with lock:
            if model in self._llamas:
                return
            self._status.set(model, "loading")
            try:
                llama = await asyncio.to_thread(self._load_blocking, model)
                if self.batch:
                    self._engines[model] = BatchedModel(
                        llama,
                        sequences=self.batch,
                        n_ctx=self.n_ctx * self.batch,
                        threads=self.threads,
                        turns=self._turns,
                        cores=self._cores,
                    )
                self._llamas[model] = llama
            except Exception as exc:
                self._status.set(model, "error", str(exc))
                raise
            self._status.set(model, "ready")

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
                n_ctx=256 if self.batch else self.n_ctx,  # batched: the engine has its own
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
    ) -> AsyncGenerator[ChatChunk, None]:
        await self.load(model)
        if self.batch:
            async for chunk in self._batched_chat(model, messages, options, schema):
                yield chunk
            return
        llama = self._llamas[model]
        feed = _Feed(model)
        async with self._locks[model], self._slots:
            with self._status.calling(model):
                worker = asyncio.create_task(
                    asyncio.to_thread(_generate, llama, messages, options, schema, feed, self._fit)
                )
                self._generating[worker] = feed
                worker.add_done_callback(self._generating.pop)
                try:
                    async for item in feed.items():
                        assert isinstance(item, ChatChunk)
                        yield item
                finally:
                    feed.stop.set()
                    # The model stays locked (and the call counted) until its thread
                    # has really stopped.
                    await asyncio.shield(worker)

    async def _batched_chat(
        self,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions,
        schema: dict[str, Any] | None,
    ) -> AsyncGenerator[ChatChunk, None]:
        feed = _Feed(model)
        with self._status.calling(model):
            try:
                try:
                    await asyncio.to_thread(
                        self._engines[model].generate,
                        messages, options, schema, feed.emit, feed.stop, feed.done,
                    )  # fmt: skip
                except Exception as exc:  # e.g. a schema llama.cpp cannot make a grammar of
                    raise RuntimeFailure(f"{model}: {exc}") from exc
                async for item in feed.items():
                    yield ChatChunk(usage=item) if isinstance(item, Usage) else ChatChunk(str(item))
            finally:
                feed.stop.set()  # the engine drops the call at its next step

    @contextlib.contextmanager
    def _fit(self, llama: Any) -> Iterator[None]:
        """Hold this process's share of the cores for one call, its threads set to it."""
        from llama_cpp import llama_set_n_threads

        with self._cores.generating():
            threads = min(self.threads, self._cores.share())
            llama_set_n_threads(llama._ctx.ctx, threads, threads)
            yield

    async def close(self, patience_s: float = 30.0) -> None:
        """Stop every call still generating, wait for its thread, then free the models:
        a model freed under a thread that decodes with it crashes the process (a call
        whose caller went away without closing it still generates until told). A
        thread that outlasts ``patience_s`` keeps its model: leaked, not freed."""
        for feed in self._generating.values():
            feed.stop.set()
        if self._generating:
            await asyncio.wait(list(self._generating), timeout=patience_s)
        self._cores.close()
        engines_stopped = [
            await asyncio.to_thread(engine.close, patience_s) for engine in self._engines.values()
        ]
        self._engines.clear()
        if self._generating or not all(engines_stopped):
            log.warning("models_not_freed", reason="a generating thread did not stop")
            return
        for llama in self._llamas.values():
            llama.close()
        self._llamas.clear()


async def _offer(options: RuntimeOptions, models: list[str]) -> Offer:
    runtime = EmbeddedRuntime(
        options.models_path,
        threads=options.threads or None,
        n_ctx=options.n_ctx,
        batch=options.batch,
        cores_dir=options.models_path / CORES_DIR if options.share_cores else None,
    )
    return Offer(runtime, lambda m: m in CATALOGUE or is_gguf_path(m), sorted(CATALOGUE))


def _prepare(options: RuntimeOptions, models: list[str], progress: Progress) -> None:
    """Pull the catalogue models that are not installed yet (a first run's download)."""
    for name in models:
        if name in CATALOGUE and not CATALOGUE[name].installed(options.models_path):
            pull_named(CATALOGUE[name], options.models_path, progress)


KIND = RuntimeKind(
    "embedded",
    "GGUF models in this process: the catalogue's or a .gguf path",
    _offer,
    order=20,
    prepare=_prepare,
)


class _Feed:
    """What a generating thread hands the event loop: items, then the end."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.stop = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()

    def emit(self, item: object) -> None:
        """Thread-safe."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def done(self) -> None:
        self.emit(_DONE)

    async def items(self) -> AsyncIterator[object]:
        """Each item until the end; an exception the thread reported is raised here."""
        while (item := await self._queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise RuntimeFailure(f"{self.model}: {item}") from item
            yield item


def _generate(
    llama: Any,
    messages: list[ChatMessage],
    options: GenerationOptions,
    schema: dict[str, Any] | None,
    feed: _Feed,
    fit: Callable[[Any], contextlib.AbstractContextManager[None]],
) -> None:
    """Runs in a worker thread on the cores ``fit`` gives it; reports chunks, an
    exception, then the end."""
    emit, stop = feed.emit, feed.stop
    tokens = _TokenCounter()
    try:
        with fit(llama):
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
        feed.done()


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
