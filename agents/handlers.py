"""What an agent does with a request: plain functions, request → reply, no bus.

Every failure becomes an ``AgentError`` reply with a code, so the chairman can
name it in a ``MemberFailed`` or ``ReviewFailed`` event.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import msgspec
import structlog

from council.agents.runtimes.base import Runtime, RuntimeFailure
from council.bus.errors import ModelLoadError, ModelNotFound
from council.bus.messages import (
    AgentError,
    AgentRequest,
    ChatMessage,
    Completion,
    OpinionRequest,
    PairwiseVerdict,
    RankVerdict,
    ReviewRequest,
    ReviewResult,
    SynthesisRequest,
    Usage,
)

log = structlog.get_logger()

OnText = Callable[[str], None]

REPAIR_PROMPT = (
    "Your reply was not a valid JSON object matching the required format. "
    "Reply again with only the JSON object, nothing else."
)


class InvalidOutput(Exception):
    pass


async def _complete(
    runtime: Runtime,
    request: AgentRequest,
    messages: list[ChatMessage],
    *,
    schema: dict[str, Any] | None = None,
    on_text: OnText | None = None,
) -> tuple[str, Usage]:
    parts: list[str] = []
    usage = Usage()
    # aclosing: a call cancelled mid-generation stops the runtime's generation now
    chunks = runtime.chat(request.model, messages, options=request.options, schema=schema)
    async with aclosing(chunks):
        async for chunk in chunks:
            if chunk.text:
                parts.append(chunk.text)
                if on_text:
                    on_text(chunk.text)
            if chunk.usage:
                usage = chunk.usage
    return "".join(parts), usage


def _failure(exc: BaseException) -> AgentError:
    match exc:
        case TimeoutError():
            return AgentError(code="timeout", detail="the model did not finish in time")
        case ModelNotFound():
            return AgentError(code="unknown_model", detail=str(exc))
        case InvalidOutput():
            return AgentError(code="invalid_output", detail=str(exc))
        case ModelLoadError() | RuntimeFailure():
            return AgentError(code="runtime_error", detail=str(exc))
    return AgentError(code="runtime_error", detail=f"{type(exc).__name__}: {exc}")


async def _text_reply(
    runtime: Runtime, request: AgentRequest, on_text: OnText | None
) -> Completion | AgentError:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(request.timeout_s):
            text, usage = await _complete(runtime, request, request.messages, on_text=on_text)
        if not text.strip():
            raise InvalidOutput("the model returned an empty answer")
    except Exception as exc:
        log.warning("agent_request_failed", model=request.model, error=repr(exc))
        return _failure(exc)
    return Completion(
        member=request.member,
        model=request.model,
        text=text.strip(),
        usage=usage,
        latency_ms=(time.perf_counter() - started) * 1000,
        runtime=_runtime_name(runtime, request.model),
    )


async def handle_opinion(
    runtime: Runtime, request: OpinionRequest, on_text: OnText | None = None
) -> Completion | AgentError:
    return await _text_reply(runtime, request, on_text)


async def handle_synthesis(
    runtime: Runtime, request: SynthesisRequest, on_text: OnText | None = None
) -> Completion | AgentError:
    return await _text_reply(runtime, request, on_text)


async def handle_review(
    runtime: Runtime, request: ReviewRequest, on_text: OnText | None = None
) -> ReviewResult | AgentError:
    """Score with the runtime's JSON mode; one repair round if the JSON is unusable."""
    started = time.perf_counter()
    schema = review_schema(request)
    messages = list(request.messages)
    usage = Usage()
    repaired = False
    try:
        async with asyncio.timeout(request.timeout_s):
            for attempt in range(2):
                text, used = await _complete(
                    runtime, request, messages, schema=schema, on_text=on_text
                )
                usage = usage + used
                try:
                    scores, justification = parse_verdict(text, request)
                    break
                except InvalidOutput as exc:
                    if attempt == 1:
                        raise InvalidOutput(f"unusable review twice: {exc}") from exc
                    messages += [
                        ChatMessage("assistant", text),
                        ChatMessage("user", REPAIR_PROMPT),
                    ]
                    repaired = True
    except Exception as exc:
        log.warning("review_failed", model=request.model, error=repr(exc))
        return _failure(exc)
    return ReviewResult(
        member=request.member,
        model=request.model,
        scores=scores,
        justification=justification,
        usage=usage,
        latency_ms=(time.perf_counter() - started) * 1000,
        repaired=repaired,
        runtime=_runtime_name(runtime, request.model),
    )


def review_schema(request: ReviewRequest) -> dict[str, Any]:
    """The verdict's JSON schema; a grammar writes properties in this order, so the
    score comes first (a cut-off verdict keeps it) unless the check is asked first."""
    justification = {"type": "string", "maxLength": 240}
    if request.mode == "pairwise":
        score = {"type": "integer", "minimum": 1, "maximum": 10}
        properties: dict[str, Any] = (
            {"justification": {"type": "string", "maxLength": 400}, "score": score}
            if request.check_first
            else {"score": score, "justification": justification}
        )
        return {
            "type": "object",
            "properties": properties,
            "required": ["score", "justification"],
        }
    n = len(request.labels)
    return {
        "type": "object",
        "properties": {
            "ranking": {
                "type": "array",
                "items": {"type": "string", "enum": list(request.labels)},
                "minItems": n,
                "maxItems": n,
            },
            "justification": justification,
        },
        "required": ["ranking", "justification"],
    }


_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def _lenient_json(text: str, kind: type[Any]) -> Any:
    """Decode ``kind`` from model output: raw newlines allowed, prose around it ignored."""
    found = _OBJECT.search(text)
    if not found:
        raise InvalidOutput(f"no JSON object in {text[:80]!r}")
    candidate = found.group(0).replace("\r", " ").replace("\n", " ")
    try:
        return msgspec.json.decode(candidate, type=kind, strict=False)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidOutput(f"{exc} in {candidate[:80]!r}") from exc


_TRUNCATED_SCORE = re.compile(
    r'^\s*\{\s*"score"\s*:\s*(-?\d+)\s*,?\s*(?:"justification"\s*:\s*"?)?(.*)', re.DOTALL
)
_TRUNCATED_RANKING = re.compile(r'^\s*\{\s*"ranking"\s*:\s*\[([^\]]*)\]', re.DOTALL)


def _truncated(text: str, kind: type[Any]) -> Any:
    """A verdict cut off by the token cap: the score (or ranking) comes first, so keep it."""
    if kind is PairwiseVerdict and (found := _TRUNCATED_SCORE.match(text)):
        return PairwiseVerdict(score=int(found.group(1)), justification=found.group(2).strip())
    if kind is RankVerdict and (found := _TRUNCATED_RANKING.match(text)):
        labels = [x.strip().strip('"') for x in found.group(1).split(",") if x.strip()]
        return RankVerdict(ranking=labels, justification="")
    return None


def _verdict(text: str, kind: type[Any]) -> Any:
    try:
        return _lenient_json(text, kind)
    except InvalidOutput:
        if (verdict := _truncated(text, kind)) is not None:
            return verdict
        raise


def parse_verdict(text: str, request: ReviewRequest) -> tuple[dict[str, float], str]:
    """Scores by label (1–10, clamped: JSON-schema bounds are not enforced) and the reason."""
    if request.mode == "pairwise":
        verdict = _verdict(text, PairwiseVerdict)
        label = request.labels[0] if request.labels else "Response"
        return {label: float(min(10, max(1, verdict.score)))}, verdict.justification.strip()
    ranked = _verdict(text, RankVerdict)
    order = list(dict.fromkeys(x.strip() for x in ranked.ranking if x.strip() in request.labels))
    if set(order) != set(request.labels):
        raise InvalidOutput(f"ranking {ranked.ranking} does not rank exactly {request.labels}")
    n = len(order)
    scores = {label: 10.0 - 9.0 * i / (n - 1) if n > 1 else 10.0 for i, label in enumerate(order)}
    return scores, ranked.justification.strip()


def _runtime_name(runtime: Runtime, model: str) -> str:
    runtime_of = getattr(runtime, "runtime_of", None)
    return runtime_of(model).name if runtime_of else runtime.name
