"""Concurrent calls to one loaded model decoded together: one llama.cpp batch a step.

llama.cpp decodes several sequences in one ``llama_decode`` call for little more
than the cost of one on a CPU whose memory bandwidth, not its arithmetic, bounds
decoding. ``BatchedModel`` keeps one context with a sequence per call in flight
(up to ``sequences``) and one worker thread that, each step, puts into a single
batch the next prompt chunk of every call still reading its prompt and the last
sampled token of every call that is writing, decodes, and samples each call's
next token with that call's own sampler (temperature, seed, JSON grammar).

A JSON grammar is checked the way llama.cpp's own sampling does it: the token is
sampled without it, and only a token the grammar refuses is sampled again with the
grammar applied to every candidate. Applying it to the whole vocabulary at every
token cost a review's decoding about a third of its speed.

Calls that begin alike (a session's opinions share the system prompt and the
question; a reviewer's pairwise calls share all but the answer reviewed) share
their prefix: a call whose prompt begins as an earlier call's waits until that
call has evaluated the common part, copies its state (llama.cpp shares the KV
cells between sequences) and evaluates only the rest; its usage reports the
tokens reused.

Each call streams its text through ``emit`` and ends with its token counts; a
call stopped by its caller leaves the batch at the next step.
"""

from __future__ import annotations

import codecs
import ctypes
import json
import math
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from council.agents.runtimes.cores import HostCores
from council.bus.messages import ChatMessage, GenerationOptions, Usage

log = structlog.get_logger()

PREFILL_CHUNK = 256
"""Prompt tokens of one call per step: a long prompt does not stall the others."""
MIN_SHARED = 16
"""A shorter common prefix is evaluated again rather than waited for."""


@dataclass
class _Call:
    prompt: list[int]
    options: GenerationOptions
    sampler: _Sampler
    emit: Callable[[object], None]
    stop: threading.Event
    done: Callable[[], None]
    seq: int = -1
    read: int = 0
    """Prompt tokens decoded so far."""
    source: _Call | None = None
    """An earlier call whose first ``shared`` prompt tokens this one copies."""
    shared: int = 0
    reused: int = 0
    written: list[int] = field(default_factory=list)
    text: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def position(self) -> int:
        return self.read + len(self.written)


class BatchedModel:
    """One model, one context, one decoding thread for every concurrent call."""

    def __init__(
        self,
        llama: Any,
        *,
        sequences: int,
        n_ctx: int,
        threads: int,
        turns: AbstractContextManager[Any] | None = None,
        cores: HostCores | None = None,
    ) -> None:
        """``turns``: held for each step, shared by the models of one process so that
        their steps take turns on the cores instead of competing for them. ``cores``:
        the host's budget; each step runs on this process's share, at most
        ``threads``."""
        import llama_cpp
        from llama_cpp import _internals

        self._lib = llama_cpp
        self._internals = _internals
        self.llama = llama
        self.model = llama._model
        self.sequences = sequences
        self._turns = turns or threading.Lock()
        self._cores = cores or HostCores(None, threads)
        self._holding = False
        self.threads = threads
        self._running_threads = threads
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = max(PREFILL_CHUNK * sequences, 512)
        params.n_ubatch = params.n_batch
        params.n_seq_max = sequences
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = True
        self.ctx = _internals.LlamaContext(model=self.model, params=params, verbose=False)
        self.batch = _internals.LlamaBatch(
            n_tokens=params.n_batch, embd=0, n_seq_max=sequences, verbose=False
        )
        self.vocab = llama_cpp.llama_model_get_vocab(self.model.model)
        self._token_data = _internals.LlamaTokenDataArray(
            n_vocab=llama_cpp.llama_vocab_n_tokens(self.vocab)
        )
        self._format = _chat_formatter(llama)
        self._buffer = ctypes.create_string_buffer(64)
        self._waiting: queue.Queue[_Call] = queue.Queue()
        self._free = list(range(sequences))
        self._active: list[_Call] = []
        self._thread = threading.Thread(target=self._run, name="batched-decode", daemon=True)
        self._closed = threading.Event()
        self._thread.start()

    def generate(
        self,
        messages: list[ChatMessage],
        options: GenerationOptions,
        schema: dict[str, Any] | None,
        emit: Callable[[object], None],
        stop: threading.Event,
        done: Callable[[], None],
    ) -> None:
        """Queue one call; ``emit`` gets its text pieces then its Usage, or an exception;
        ``done`` is called last, from the decoding thread."""
        prompt_text = self._format([{"role": m.role, "content": m.content} for m in messages])
        prompt = self.llama.tokenize(prompt_text.encode(), add_bos=False, special=True)
        room = self.ctx.n_ctx() // self.sequences
        if len(prompt) >= room:
            raise ValueError(f"the prompt's {len(prompt)} tokens fill the {room}-token context")
        sampler = self._sampler(options, schema)
        self._waiting.put(_Call(prompt, options, sampler, emit, stop, done))

    def close(self, patience_s: float = 5.0) -> bool:
        """Stop the engine's thread; whether it stopped within ``patience_s`` (only then
        may the model it decodes with be freed)."""
        self._closed.set()
        self._thread.join(patience_s)
        return not self._thread.is_alive()

    def _sampler(self, options: GenerationOptions, schema: dict[str, Any] | None) -> _Sampler:
        grammar = None
        if schema is not None:
            from llama_cpp.llama_grammar import LlamaGrammar

            grammar = self._internals.LlamaSampler()
            rules = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            grammar.add_grammar(self.model, rules)
        sampler = self._internals.LlamaSampler()
        # llama-cpp-python's chat defaults, as the one-call-at-a-time path samples
        temperature = options.temperature if options.temperature is not None else 0.2
        if temperature <= 0:
            sampler.add_greedy()
        else:
            sampler.add_top_k(40)
            sampler.add_top_p(0.95, 1)
            sampler.add_min_p(0.05, 1)
            sampler.add_temp(temperature)
            seed = options.seed if options.seed is not None else self._lib.LLAMA_DEFAULT_SEED
            sampler.add_dist(seed & 0xFFFFFFFF)
        return _Sampler(sampler, grammar)

    # --- the decoding thread -------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            self._admit(block=not self._active)
            self._hold_cores(bool(self._active))
            if not self._active:
                continue
            try:
                with self._turns:
                    self._fit_threads()
                    self._step()
            except Exception as exc:  # a failed decode fails every call in the batch
                for call in list(self._active):
                    self._finish(call, exc)
        self._hold_cores(False)
        closed = RuntimeError("the model was closed")
        while self._active or not self._waiting.empty():  # no caller is left waiting
            self._admit(block=False)
            for call in list(self._active):
                self._finish(call, closed)

    def _hold_cores(self, busy: bool) -> None:
        """The host counts this process as generating while it has calls in flight."""
        if busy != self._holding:
            (self._cores.hold if busy else self._cores.release)()
            self._holding = busy

    def _fit_threads(self) -> None:
        threads = min(self.threads, self._cores.share())
        if threads != self._running_threads:
            self._lib.llama_set_n_threads(self.ctx.ctx, threads, threads)
            self._running_threads = threads
            log.info("threads_fitted", threads=threads, allowed=self.threads)

    def _admit(self, *, block: bool) -> None:
        while self._free:
            try:
                call = self._waiting.get(timeout=0.1) if block else self._waiting.get_nowait()
            except queue.Empty:
                return
            block = False
            call.seq = self._free.pop()
            self._share(call)
            self._active.append(call)

    def _share(self, call: _Call) -> None:
        """Choose the active call with the longest prompt prefix in common, if any."""
        best, length = None, 0
        for other in self._active:
            common = _common_prefix(call.prompt, other.prompt)
            if common > length:
                best, length = other, common
        length = min(length, len(call.prompt) - 1)  # the last token's logits are its own
        if best is not None and length >= MIN_SHARED:
            call.source, call.shared = best, length

    def _copy_shared(self, call: _Call) -> bool:
        """Copy the shared prefix once its source has evaluated it; False while waiting."""
        source = call.source
        if source is None:
            return True
        if source not in self._active:  # it ended first: evaluate the prefix after all
            call.source = None
            return True
        if source.read < call.shared:
            return False
        self.ctx.kv_cache_seq_cp(source.seq, call.seq, 0, call.shared)
        call.read = call.reused = call.shared
        call.source = None
        return True

    def _step(self) -> None:
        batch = self.batch.batch
        batch.n_tokens = 0
        readers: list[tuple[_Call, int]] = []  # calls whose logits this step produces

        def add(token: int, position: int, seq: int, logits: bool) -> None:
            i = batch.n_tokens
            batch.token[i] = token
            batch.pos[i] = position
            batch.seq_id[i][0] = seq
            batch.n_seq_id[i] = 1
            batch.logits[i] = logits
            batch.n_tokens += 1

        # before this step adds anything: a source's ``read`` counts only what is decoded
        waiting = [c for c in self._active if not self._copy_shared(c)]
        for call in list(self._active):
            if call.stop.is_set():
                self._finish(call, None)
                continue
            if call.read < len(call.prompt):
                if call in waiting:
                    continue
                chunk = call.prompt[call.read : call.read + PREFILL_CHUNK]
                for k, token in enumerate(chunk):
                    last = call.read + k == len(call.prompt) - 1
                    add(token, call.read + k, call.seq, last)
                call.read += len(chunk)
                if call.read == len(call.prompt):
                    readers.append((call, batch.n_tokens - 1))
            else:
                add(call.written[-1], call.position - 1, call.seq, True)
                readers.append((call, batch.n_tokens - 1))
        if batch.n_tokens == 0:
            return
        self.ctx.decode(self.batch)
        for call, index in readers:
            token = self._sample(call.sampler, index)
            if self._lib.llama_vocab_is_eog(self.vocab, token):
                self._finish(call, None)
                continue
            call.written.append(token)
            piece = call.text.decode(self._piece(token))
            if piece:
                call.emit(piece)
            limit = call.options.max_tokens
            if (limit is not None and len(call.written) >= limit) or (
                call.position >= self.ctx.n_ctx() // self.sequences
            ):
                self._finish(call, None)

    def _sample(self, sampler: _Sampler, index: int) -> int:
        """The next token of the sequence whose logits are at ``index``."""
        lib, chain = self._lib, sampler.chain.sampler
        if sampler.grammar is None:
            return int(lib.llama_sampler_sample(chain, self.ctx.ctx, index))
        grammar = sampler.grammar.sampler
        candidates = self._candidates(index)
        lib.llama_sampler_apply(chain, ctypes.byref(candidates.candidates))
        token = int(candidates.candidates_data.id[candidates.candidates.selected])
        single = lib.llama_token_data_array(
            data=ctypes.pointer(lib.llama_token_data(token, 1.0, 0.0)), size=1, selected=-1
        )
        lib.llama_sampler_apply(grammar, ctypes.byref(single))
        if single.data[0].logit == -math.inf:  # refused: sample again within the grammar
            candidates = self._candidates(index)
            lib.llama_sampler_apply(grammar, ctypes.byref(candidates.candidates))
            lib.llama_sampler_apply(chain, ctypes.byref(candidates.candidates))
            token = int(candidates.candidates_data.id[candidates.candidates.selected])
        lib.llama_sampler_accept(grammar, token)
        lib.llama_sampler_accept(chain, token)
        return token

    def _candidates(self, index: int) -> Any:
        """Every token with its logit at ``index``, unsorted, none selected."""
        logits = self._lib.llama_get_logits_ith(self.ctx.ctx, index)
        candidates = self._token_data
        candidates.copy_logits(np.ctypeslib.as_array(logits, shape=(candidates.n_vocab,)))
        candidates.candidates.selected = -1
        return candidates

    def _piece(self, token: int) -> bytes:
        size = len(self._buffer)
        n = self._lib.llama_token_to_piece(self.vocab, token, self._buffer, size, 0, False)
        if n > size:  # a longer piece than any seen so far
            self._buffer = ctypes.create_string_buffer(n)
            return self._piece(token)
        return self._buffer.raw[: max(n, 0)]

    def _finish(self, call: _Call, error: BaseException | None) -> None:
        self._active.remove(call)
        self.ctx.kv_cache_seq_rm(call.seq, -1, -1)
        self._free.append(call.seq)
        call.sampler.close()
        if error is not None:
            call.emit(error)
        else:
            tail = call.text.decode(b"", final=True)
            if tail:
                call.emit(tail)
            call.emit(Usage(len(call.prompt), len(call.written), call.reused))
        call.done()


@dataclass
class _Sampler:
    """A call's sampling chain, and its JSON grammar apart (checked, not applied to
    every token)."""

    chain: Any
    grammar: Any = None

    def close(self) -> None:
        self.chain.close()
        if self.grammar is not None:
            self.grammar.close()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _chat_formatter(llama: Any) -> Callable[[list[dict[str, str]]], str]:
    """The model's own chat template (from its GGUF), as llama-cpp-python applies it."""
    from llama_cpp import llama_chat_format

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("the model has no chat template")
    eos = llama._model.token_get_text(llama.token_eos())
    bos = llama._model.token_get_text(llama.token_bos()) if llama.token_bos() != -1 else ""
    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=template, eos_token=eos, bos_token=bos
    )

    def render(messages: list[dict[str, str]]) -> str:
        return formatter(messages=messages).prompt  # type: ignore[arg-type]  # TypedDicts

    return render
