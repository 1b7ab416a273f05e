"""JSON on the wire: one encoder, and one typed decoder per message kind, built once.

A decoder raises InvalidMessage naming the subject and msgspec's reason, so
every role reports a malformed message the same way.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from council.bus.errors import InvalidMessage
from council.bus.messages import (
    AgentInfo,
    AgentRequest,
    AgentResponse,
    AskReply,
    NodeHealth,
    OpinionRequest,
    Question,
    ReviewRequest,
    SessionEvent,
    SynthesisRequest,
    TokenDelta,
)

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


def encode(message: Any) -> bytes:
    return _encoder.encode(message)


class Decoder(Generic[T]):
    """Decodes one kind (a struct or a union of tagged structs)."""

    def __init__(self, kind: Any) -> None:
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(kind)

    def __call__(self, data: bytes, subject: str = "?") -> T:
        try:
            return self._decoder.decode(data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise InvalidMessage(subject, str(exc)) from exc


decode_question: Decoder[Question] = Decoder(Question)
decode_ask_reply: Decoder[AskReply] = Decoder(AskReply)
decode_event: Decoder[SessionEvent] = Decoder(SessionEvent)
decode_delta: Decoder[TokenDelta] = Decoder(TokenDelta)
decode_health: Decoder[NodeHealth] = Decoder(NodeHealth)
decode_agent_info: Decoder[AgentInfo] = Decoder(AgentInfo)
decode_agent_response: Decoder[AgentResponse] = Decoder(AgentResponse)
decode_request: dict[str, Decoder[AgentRequest]] = {
    "opinion": Decoder(OpinionRequest),
    "review": Decoder(ReviewRequest),
    "synthesize": Decoder(SynthesisRequest),
}
"""An agent's request, by the kind its subject names."""
