"""The OpenAI chat-completions shapes `council api` reads and writes (the subset
that chat front ends, editors and the `openai` package use)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from msgspec import Struct

from council.bus.events import FinalAnswer
from council.bus.messages import Turn


class TextPart(Struct, kw_only=True):
    type: str
    text: str = ""


class ApiMessage(Struct, kw_only=True):
    role: str
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content if part.type == "text")
        return self.content or ""


class ChatRequest(Struct, kw_only=True):
    """Fields OpenAI defines and the council has no use for (``n``, ``top_p``, tools
    ...) are accepted and ignored, as other OpenAI-compatible servers do."""

    messages: list[ApiMessage]
    model: str = "council"
    stream: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None


class BadRequest(ValueError):
    pass


def question_and_context(messages: list[ApiMessage]) -> tuple[str, list[Turn]]:
    """The user's last words are the question; the user and assistant messages before
    them are the conversation so far (user messages in a row read as one; system
    messages are left out: the members have their own)."""
    said = [m for m in messages if m.role in ("user", "assistant")]
    if not said or said[-1].role != "user":
        raise BadRequest("the last message must be the user's")
    context: list[Turn] = []
    asked: list[str] = []
    for message in said:
        if message.role == "user":
            asked.append(message.text)
        elif asked:
            context.append(Turn(question="\n\n".join(asked), answer=message.text))
            asked = []
    return "\n\n".join(asked), context


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def usage_of(final: FinalAnswer) -> dict[str, int]:
    total = final.usage.get("total")
    prompt = total.prompt_tokens if total else 0
    completion = total.completion_tokens if total else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion(
    final: FinalAnswer, model: str, council: dict[str, Any], created: int | None = None
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{final.session_id}",
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": final.answer},
                "finish_reason": "stop",
            }
        ],
        "usage": usage_of(final),
        "council": council,
    }


def chunk(
    session_id: str,
    model: str,
    created: int,
    delta: dict[str, str],
    finish: str | None = None,
    **extra: Any,
) -> bytes:
    """One server-sent event of a streamed completion."""
    body = {
        "id": f"chatcmpl-{session_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + msgspec.json.encode(body) + b"\n\n"
