"""The OpenAI chat-completions shapes `council api` reads and writes (the subset
that chat front ends, editors and the `openai` package use)."""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import Struct

from council.bus.documents import BadDocument, read_document
from council.bus.events import FinalAnswer
from council.bus.messages import Document, Turn


class FileData(Struct, kw_only=True):
    filename: str = "document"
    file_data: str = ""
    """The file as a data URL (``data:application/pdf;base64,...``) or plain base64."""


class ContentPart(Struct, kw_only=True):
    """A part of a message's content: ``text``, or a ``file`` (OpenAI's shape); others
    (images, audio) are ignored."""

    type: str
    text: str = ""
    file: FileData | None = None


class ApiMessage(Struct, kw_only=True):
    role: str
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content if part.type == "text")
        return self.content or ""

    def documents(self) -> list[Document]:
        """The files this message carries, read as every stage will see them."""
        if not isinstance(self.content, list):
            return []
        return [_document(part.file) for part in self.content if part.type == "file" and part.file]


def _document(file: FileData) -> Document:
    encoded = (
        file.file_data.partition(",")[2] if file.file_data.startswith("data:") else file.file_data
    )
    try:
        data = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise BadRequest(f"file {file.filename}: file_data is not base64") from None
    try:
        return read_document(file.filename, data)
    except BadDocument as exc:
        raise BadRequest(str(exc)) from None


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


@dataclass
class Asked:
    """An OpenAI messages array as a council question."""

    question: str
    context: list[Turn]
    documents: list[Document]
    """The files of the question's own messages."""
    earlier_documents: list[Document]
    """Files of the messages before: the council has them already when the question
    continues a stored conversation, else they go with the question."""


def question_and_context(messages: list[ApiMessage]) -> Asked:
    """The user's last words are the question; the user and assistant messages before
    them are the conversation so far (user messages in a row read as one; system
    messages are left out: the members have their own)."""
    said = [m for m in messages if m.role in ("user", "assistant")]
    if not said or said[-1].role != "user":
        raise BadRequest("the last message must be the user's")
    context: list[Turn] = []
    asked: list[str] = []
    files: list[Document] = []
    earlier: list[Document] = []
    for message in said:
        if message.role == "user":
            asked.append(message.text)
            files += message.documents()
        elif asked:
            context.append(Turn(question="\n\n".join(asked), answer=message.text))
            asked = []
            earlier, files = earlier + files, []
    return Asked("\n\n".join(asked), context, files, earlier)


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
