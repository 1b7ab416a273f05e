"""JSON on the wire: one encoder, and one typed decoder per message kind, built once.

A decoder raises InvalidMessage naming the subject and msgspec's reason, so
every role reports a malformed message the same way.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec
import structlog
from nats.aio.msg import Msg

from council.bus import subjects
from council.bus.errors import InvalidMessage
from council.bus.events import SessionEvent
from council.bus.messages import (
    AgentInfo,
    AgentRequest,
    AgentResponse,
    AskReply,
    CancelCalls,
    DocumentPart,
    DocumentReply,
    ForgetConversation,
    ForgetReply,
    NodeHealth,
    OpinionRequest,
    Presets,
    ProgramResult,
    Question,
    ReviewRequest,
    RunProgram,
    StopReply,
    StopSession,
    SynthesisRequest,
    TokenDelta,
    Turn,
)

T = TypeVar("T")

log = structlog.get_logger()

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

    def read(self, msg: Msg, complaint: str = "") -> T | None:
        """The message decoded, or None for one that is not this kind (anyone may
        publish on most subjects); ``complaint`` names the warning logged then."""
        try:
            return self(msg.data, msg.subject)
        except InvalidMessage as exc:
            if complaint:
                log.warning(complaint, subject=msg.subject, error=exc.detail)
            return None


decode_question: Decoder[Question] = Decoder(Question)
decode_ask_reply: Decoder[AskReply] = Decoder(AskReply)
decode_event: Decoder[SessionEvent] = Decoder(SessionEvent)
decode_delta: Decoder[TokenDelta] = Decoder(TokenDelta)
decode_health: Decoder[NodeHealth] = Decoder(NodeHealth)
decode_agent_info: Decoder[AgentInfo] = Decoder(AgentInfo)
decode_agent_response: Decoder[AgentResponse] = Decoder(AgentResponse)
decode_cancel: Decoder[CancelCalls] = Decoder(CancelCalls)
decode_stop: Decoder[StopSession] = Decoder(StopSession)
decode_stopped: Decoder[StopReply] = Decoder(StopReply)
decode_turn: Decoder[Turn] = Decoder(Turn)
decode_program: Decoder[RunProgram] = Decoder(RunProgram)
decode_program_result: Decoder[ProgramResult] = Decoder(ProgramResult)
decode_forget: Decoder[ForgetConversation] = Decoder(ForgetConversation)
decode_forgotten: Decoder[ForgetReply] = Decoder(ForgetReply)
decode_presets: Decoder[Presets] = Decoder(Presets)
decode_document_part: Decoder[DocumentPart] = Decoder(DocumentPart)
decode_document_reply: Decoder[DocumentReply] = Decoder(DocumentReply)
decode_request: dict[str, Decoder[AgentRequest]] = {
    "opinion": Decoder(OpinionRequest),
    "review": Decoder(ReviewRequest),
    "synthesize": Decoder(SynthesisRequest),
}
"""An agent's request, by the kind its subject names."""


def read_event(msg: Msg) -> SessionEvent | None:
    """The session event in ``msg``, or None (logged) for one that is unreadable or
    claims another session than its subject names."""
    event = decode_event.read(msg, "invalid_session_event")
    if event is not None and event.session_id != subjects.session_of(msg.subject):
        log.warning("foreign_session_event", subject=msg.subject, claims=event.session_id)
        return None
    return event
