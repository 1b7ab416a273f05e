"""The council as an OpenAI-compatible model: `GET /v1/models`, `POST /v1/chat/completions`.

A client of the bus like any other: each completion is a council session asked
on ``council.ask`` and followed on the stream, so any tool that speaks to an
OpenAI endpoint uses the council unchanged. The model ``council`` is the council
the chairman is configured with, ``council-<name>`` each of its presets; a model
the agents serve is asked alone.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from council.api.logins import Logins, Refused
from council.api.streaming import AnswerStream
from council.api.wire import (
    BadRequest,
    ChatRequest,
    chunk,
    completion,
    error_body,
    question_and_context,
    usage_of,
)
from council.bus.client.ask import Asking, follow, presets, roster, stop_quietly, submit
from council.bus.errors import (
    CouncilError,
    NoCouncil,
    QuestionRejected,
    SessionTimeout,
)
from council.bus.events import FinalAnswer, SessionEvent, SessionFailed, StageStarted
from council.bus.messages import DEFAULT_PRESET, Accepted, Question, TokenDelta, Turn
from council.bus.session import FollowedSession
from council.bus.transport.connection import DEFAULT_URL, Credentials, connect, whoami
from council.bus.transport.stream import conversations
from council.bus.tunables import tunable

log = structlog.get_logger()

COUNCIL_MODEL = "council"
"""The chairman's defaults as a model; each of its presets is ``council-<name>``."""


def model_of_preset(preset: str) -> str:
    return COUNCIL_MODEL if preset == DEFAULT_PRESET else f"{COUNCIL_MODEL}-{preset}"


def preset_of_model(model: str) -> str | None:
    """The preset a model id names ("" for the defaults), or None for a served model."""
    if model == COUNCIL_MODEL:
        return ""
    named, dash, preset = model.partition("-")
    return preset if named == COUNCIL_MODEL and dash else None


_REJECTION_STATUS = {"unknown_model": 404, "unknown_preset": 404, "busy": 429}


@dataclass(frozen=True)
class ApiConfig:
    nats_url: str = DEFAULT_URL
    credentials: Credentials = field(default_factory=Credentials)
    key: str = tunable(
        "",
        "COUNCIL_API_KEY",
        "bearer token the API asks for; required on an address beyond loopback "
        "(`council up` makes one)",
        flag="--api-key",
    )
    """The bearer token every request must carry ("": none asked, for loopback only)."""
    timeout_s: float = Asking.ask_timeout
    address: str = tunable(
        "127.0.0.1",
        "COUNCIL_API_ADDRESS",
        "address the OpenAI-compatible API listens on",
        flag="--api-address",
    )
    port: int = tunable(
        8400, "COUNCIL_API_PORT", "port of the OpenAI-compatible API", flag="--api-port"
    )


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, code), status_code=status)


def _unauthorized(message: str) -> JSONResponse:
    return _error(401, message, "invalid_request_error", "invalid_api_key")


def council_summary(accepted: Accepted, events: list[SessionEvent]) -> dict[str, Any]:
    """What the session did, for the extra ``council`` field of a completion."""
    final = events[-1] if events and isinstance(events[-1], FinalAnswer) else None
    seconds = final.latency_ms if final else {}
    return {
        "session_id": accepted.session_id,
        "conversation": accepted.conversation,
        "members": accepted.members,
        "chairman": accepted.chairman,
        "strategy": accepted.strategy,
        "preset": accepted.preset,
        "stages": {
            e.stage: {
                "calls": e.expected,
                "reason": e.reason,
                "seconds": round(seconds.get(e.stage, 0.0) / 1000, 2),
            }
            for e in events
            if isinstance(e, StageStarted)
        },
    }


class CouncilApi:
    def __init__(self, config: ApiConfig) -> None:
        self.config = config
        self._nc: Client | None = None
        self.logins = Logins(config.nats_url, config.key, "api")

    @property
    def nc(self) -> Client:
        assert self._nc is not None, "the API is not started"
        return self._nc

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ],
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        self._nc = await connect(
            self.config.nats_url, name="council-api", credentials=self.config.credentials
        )
        try:
            yield
        finally:
            await self.logins.close()
            await self._nc.close()

    async def _caller(self, request: Request) -> Client | JSONResponse:
        """Whose connection a request uses (``Logins``): a person's key is their own
        connection, the API's key (or none, on loopback without one) the API's. Else 401."""
        given = request.headers.get("authorization", "")
        try:
            if (person := await self.logins.person(given)) is not None:
                return person
        except Refused as exc:
            return _unauthorized(str(exc))
        if self.logins.is_service(given):
            return self.nc
        return _unauthorized("a valid API key is required")

    async def models(self, request: Request) -> Response:
        nc = await self._caller(request)
        if isinstance(nc, JSONResponse):
            return nc
        served = sorted(
            {m.name for info in await roster(nc) for m in info.models if "opinion" in m.kinds}
        )
        try:
            named = [model_of_preset(p.name) for p in await presets(nc)]
        except NoCouncil:
            named = [COUNCIL_MODEL]
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "council"}
                    for name in [*named, *served]
                ],
            }
        )

    async def chat(self, request: Request) -> Response:
        nc = await self._caller(request)
        if isinstance(nc, JSONResponse):
            return nc
        try:
            asked = msgspec.json.decode(await request.body(), type=ChatRequest)
            said = question_and_context(asked.messages)
        except (msgspec.DecodeError, msgspec.ValidationError, BadRequest) as exc:
            return _error(400, f"invalid request: {exc}", "invalid_request_error")
        preset = preset_of_model(asked.model)
        alone = preset is None
        thread = await continued(nc, said.context)
        question = Question(
            question=said.question,
            conversation=thread,
            context=said.context,
            documents=said.documents if thread else [*said.earlier_documents, *said.documents],
            seed=asked.seed,
            # the council's own sampling is measured; a model asked alone takes the caller's
            members=[asked.model] if alone else [],
            alone=alone,
            temperature=asked.temperature if alone else None,
            max_tokens=asked.max_tokens if alone else None,
            preset=preset or "",
        )
        try:
            accepted = await submit(nc, question)
        except QuestionRejected as exc:
            status = _REJECTION_STATUS.get(exc.reason, 400)
            kind = "invalid_request_error" if status != 429 else "rate_limit_error"
            refused = _error(status, str(exc), kind, exc.reason)
            if exc.retry_after_s:
                refused.headers["Retry-After"] = str(math.ceil(exc.retry_after_s))
            return refused
        except NoCouncil as exc:
            return _error(503, str(exc), "server_error", "no_council")
        log.info("api_session", session_id=accepted.session_id, model=asked.model)
        if asked.stream:
            return StreamingResponse(
                self._streamed(nc, accepted, asked.model), media_type="text/event-stream"
            )
        try:
            events = await self._while_there(request, nc, accepted.session_id)
        except SessionTimeout as exc:
            return _error(504, str(exc), "server_error", "timeout")
        if events is None:  # nobody to answer: the session was stopped
            return Response(status_code=499)
        final = events[-1]
        if not isinstance(final, FinalAnswer):
            assert isinstance(final, SessionFailed)
            return _error(502, f"{final.reason}: {final.detail}", "server_error", final.reason)
        return JSONResponse(completion(final, asked.model, council_summary(accepted, events)))

    async def _streamed(self, nc: Client, accepted: Accepted, model: str) -> AsyncIterator[bytes]:
        """The answer's words as soon as they exist (``AnswerStream``), the stages'
        progress as chunks of their own with an empty delta and a ``council_progress``
        field, then usage and the session's summary. A client that goes away stops
        the session."""
        created = int(time.time())
        sid = accepted.session_id
        yield chunk(sid, model, created, {"role": "assistant", "content": ""})
        arrived: asyncio.Queue[SessionEvent | TokenDelta | CouncilError | None] = asyncio.Queue()
        reader = asyncio.create_task(self._arrivals(nc, sid, arrived))
        answer, session = AnswerStream(), FollowedSession(sid)
        events: list[SessionEvent] = []
        finished = False
        try:
            while (item := await arrived.get()) is not None:
                if isinstance(item, CouncilError):
                    timeout = "timeout" if isinstance(item, SessionTimeout) else None
                    yield _sse_error(str(item), timeout)
                    break
                if isinstance(item, TokenDelta):
                    if text := answer.delta(item):
                        yield chunk(sid, model, created, {"content": text})
                    continue
                events.append(item)
                if text := answer.event(item):
                    yield chunk(sid, model, created, {"content": text})
                if session.follow(item) and not isinstance(item, FinalAnswer | SessionFailed):
                    yield chunk(sid, model, created, {}, council_progress=progress_of(session))
                if isinstance(item, FinalAnswer):
                    finished = True
                    yield chunk(
                        sid, model, created, {}, "stop",
                        usage=usage_of(item), council=council_summary(accepted, events),
                    )  # fmt: skip
                elif isinstance(item, SessionFailed):
                    finished = True
                    yield _sse_error(f"{item.reason}: {item.detail}", item.reason)
        finally:
            reader.cancel()
            if not finished:
                await stop_quietly(nc, sid, "the API client went away")
        yield b"data: [DONE]\n\n"

    async def _while_there(
        self, request: Request, nc: Client, session_id: str
    ) -> list[SessionEvent] | None:
        """The session's events to its end; None, and the session stopped, when the client
        goes away first (a server sees that of a request it has not answered only by
        asking: once a second)."""

        async def events() -> list[SessionEvent]:
            return [e async for e in follow(nc, session_id, timeout_s=self.config.timeout_s)]

        followed = asyncio.create_task(events())
        while not followed.done():
            await asyncio.wait({followed}, timeout=1.0)
            if not followed.done() and await request.is_disconnected():
                followed.cancel()
                await stop_quietly(nc, session_id, "the API client went away")
                return None
        return followed.result()

    async def _arrivals(
        self,
        nc: Client,
        session_id: str,
        arrived: asyncio.Queue[SessionEvent | TokenDelta | CouncilError | None],
    ) -> None:
        """The session's events and its live deltas, in one queue, in arrival order;
        None at the end."""
        try:
            async for event in follow(
                nc, session_id, timeout_s=self.config.timeout_s, on_delta=arrived.put_nowait
            ):
                arrived.put_nowait(event)
        except CouncilError as exc:
            arrived.put_nowait(exc)
        finally:
            arrived.put_nowait(None)


def progress_of(session: FollowedSession) -> dict[str, Any]:
    """A streamed chunk's ``council_progress``: each stage begun, its calls done and
    expected, and the same on one line."""
    return {
        "stages": {stage: list(counts) for stage, counts in session.progress().items()},
        "line": session.progress_line(),
    }


async def continued(nc: Client, context: list[Turn]) -> str:
    """The stored conversation of this connection's person whose turns are exactly
    ``context``, so that a follow-up continues it (an OpenAI client resends the whole
    thread each time); "" when none is: a thread edited or begun elsewhere starts one."""
    if not context:
        return ""
    said = [(turn.question.strip(), turn.answer.strip()) for turn in context]
    found = ""
    for cid, turns in (await conversations(nc, whoami(nc))).items():
        if [(turn.question.strip(), turn.answer.strip()) for turn in turns] == said:
            found = cid  # the latest started, should a thread have been asked twice
    return found


def _sse_error(message: str, code: str | None) -> bytes:
    return b"data: " + msgspec.json.encode(error_body(message, "server_error", code)) + b"\n\n"
