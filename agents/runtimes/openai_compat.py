"""Models of any OpenAI-compatible server (LM Studio, vLLM, llama.cpp's `llama-server`,
Ollama's `/v1`, llama-cpp-python's server, a hosted API), through the official
``openai`` client.

Servers differ in what they accept. A review's JSON schema is asked for as
``json_schema`` first, then as ``json_object`` with the schema (llama-cpp-python's
form), then not at all (the handlers parse leniently and repair once); the form a
model's server took is remembered. A stream that reports no usage (some servers
ignore ``stream_options``) counts its text chunks as completion tokens and logs
that the prompt's are unknown.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import openai
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


def _schema_forms(schema: dict[str, Any]) -> list[dict[str, Any] | None]:
    """The ways of asking for ``schema``, most precise first."""
    return [
        {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
        {"type": "json_object", "schema": schema},
        None,
    ]


class OpenAICompatRuntime:
    name = "openai"

    def __init__(self, base_url: str, api_key: str = "", *, timeout_s: float = 600.0) -> None:
        self.base_url = base_url
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "none", timeout=timeout_s, max_retries=1
        )
        self._status = Statuses(self.name)
        self._schema_form: dict[str, int] = {}
        """Per model, which of ``_schema_forms`` its server took."""

    def statuses(self) -> list[ModelStatus]:
        return self._status.all()

    def capacity(self) -> Capacity:
        return Capacity()  # the server schedules its own calls

    async def listed(self) -> list[str] | None:
        """The models the server lists, or None when it does not answer."""
        try:
            return [m.id async for m in self._client.models.list()]
        except openai.OpenAIError as exc:
            log.info("openai_server_unreachable", base_url=self.base_url, error=str(exc))
            return None

    async def load(self, model: str) -> None:
        if model in self._status:
            return
        listed = await self.listed()
        if listed is None:
            raise ModelLoadError(model, f"no OpenAI-compatible server answers at {self.base_url}")
        if model not in listed:
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
        forms = _schema_forms(schema) if schema else [None]
        first = self._schema_form.get(model, 0) if schema else 0
        with self._status.calling(model):
            for index in range(first, len(forms)):
                request: dict[str, Any] = {
                    "model": model,
                    "messages": [{"role": m.role, "content": m.content} for m in messages],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                    "temperature": options.temperature,
                    "max_tokens": options.max_tokens,
                    "seed": options.seed,
                }
                if forms[index]:
                    request["response_format"] = forms[index]
                try:
                    stream = await self._client.chat.completions.create(**request)
                except openai.APITimeoutError as exc:
                    raise TimeoutError(str(exc)) from exc
                except (openai.BadRequestError, openai.InternalServerError) as exc:
                    if schema and index + 1 < len(forms) and "response_format" in str(exc):
                        log.info("openai_schema_form_refused", model=model, form=index)
                        continue  # the server does not take this form of a schema
                    raise RuntimeFailure(f"openai {model}: {exc}") from exc
                except openai.OpenAIError as exc:
                    raise RuntimeFailure(f"openai {model}: {exc}") from exc
                if schema:
                    self._schema_form[model] = index
                async for chunk in self._chunks(model, stream):
                    yield chunk
                return

    async def _chunks(self, model: str, stream: Any) -> AsyncGenerator[ChatChunk, None]:
        pieces = 0
        usage: Usage | None = None
        try:
            async for part in stream:
                if part.choices and (text := part.choices[0].delta.content):
                    pieces += 1
                    yield ChatChunk(text)
                if part.usage:
                    usage = Usage(part.usage.prompt_tokens, part.usage.completion_tokens)
        except openai.APITimeoutError as exc:
            raise TimeoutError(str(exc)) from exc
        except openai.OpenAIError as exc:
            raise RuntimeFailure(f"openai {model}: {exc}") from exc
        finally:
            await stream.close()
        if usage is None:
            log.info("openai_usage_unreported", model=model, completion_pieces=pieces)
            usage = Usage(0, pieces)
        yield ChatChunk(usage=usage)

    async def close(self) -> None:
        await self._client.close()


async def _offer(options: RuntimeOptions, models: list[str]) -> Offer | None:
    if not options.openai_base_url:
        return None
    runtime = OpenAICompatRuntime(options.openai_base_url, options.openai_api_key)
    listed = await runtime.listed()
    if listed is None:
        await runtime.close()
        return None
    return Offer(runtime, lambda m: m in listed, listed)


KIND = RuntimeKind(
    "openai",
    "the models an OpenAI-compatible server lists (COUNCIL_OPENAI_BASE_URL)",
    _offer,
    order=15,
)
