"""`council mcp`: the council as tools of the Model Context Protocol, for the editors
and desktop assistants that call tools (Claude Desktop, Cursor, VS Code, Zed).

A client of the bus like `council api`, on the official SDK (``mcp``): over stdio
for a desktop client that starts it, or over streamable HTTP behind the API's key
or a person's own login (``Logins``). ``ask_council`` runs a session and sends an
MCP progress notification as its stages move; ``list_conversations`` and
``read_conversation`` read what was asked; ``council://presets`` lists the named
councils.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from nats.aio.client import Client
from starlette.types import ASGIApp, Receive, Scope, Send

from council.api.logins import Logins, Refused
from council.bus.client import export
from council.bus.client.ask import follow, presets, stop_quietly, submit
from council.bus.errors import CouncilError
from council.bus.events import FinalAnswer, SessionEvent, SessionFailed, StageStarted
from council.bus.messages import Accepted, Question
from council.bus.session import FollowedSession
from council.bus.transport.connection import DEFAULT_URL, Credentials, connect, whoami
from council.bus.transport.stream import conversation, conversations
from council.bus.tunables import tunable

log = structlog.get_logger()

PRESETS_URI = "council://presets"


@dataclass(frozen=True)
class McpConfig:
    transport: str = tunable(
        "stdio",
        "COUNCIL_MCP_TRANSPORT",
        "stdio (a desktop client starts `council mcp` itself) or http (streamable HTTP on "
        "/mcp, asking for COUNCIL_API_KEY as a bearer token)",
        flag="--mcp-transport",
    )
    address: str = tunable(
        "127.0.0.1", "COUNCIL_MCP_ADDRESS", "address `council mcp` listens on over http",
        flag="--mcp-address",
    )  # fmt: skip
    port: int = tunable(
        8402, "COUNCIL_MCP_PORT", "port of `council mcp` over http", flag="--mcp-port"
    )
    nats_url: str = DEFAULT_URL
    credentials: Credentials = field(default_factory=Credentials)
    key: str = ""
    """The API's bearer key (``COUNCIL_API_KEY``), asked for over http ("": none, loopback)."""
    timeout_s: float = 900.0


Progress = Callable[[float, float | None, str], Awaitable[None]]


class Council:
    """The bus as the tools use it: the server's own connection, opened at the first
    call, or over HTTP a person's own (``Logins``: their bearer ``NAME:PASSWORD``)."""

    def __init__(self, config: McpConfig) -> None:
        self.config = config
        self.logins = Logins(config.nats_url, config.key, "mcp")
        self._nc: Client | None = None
        self._lock = asyncio.Lock()

    async def nc(self, ctx: Context | None = None) -> Client:
        headers = ctx.headers if ctx is not None else None
        try:
            person = await self.logins.person((headers or {}).get("authorization", ""))
        except Refused as exc:
            raise ToolError(str(exc)) from None
        if person is not None:
            return person
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(
                    self.config.nats_url, name="council-mcp", credentials=self.config.credentials
                )
            return self._nc

    async def close(self) -> None:
        await self.logins.close()
        if self._nc is not None:
            await self._nc.close()

    async def ask(self, nc: Client, question: Question, progress: Progress) -> str:
        """The final answer and what the session did; a progress notification as the
        stages' line changes ("opinions 2/3 · reviews 0/6"). A cancelled call stops the
        session."""
        accepted = await submit(nc, question)
        await progress(
            0, None, f"asked: {', '.join(accepted.members)} (session {accepted.session_id})"
        )
        session = FollowedSession(accepted.session_id)
        events: list[SessionEvent] = []
        shown = ""
        try:
            async for event in follow(nc, accepted.session_id, timeout_s=self.config.timeout_s):
                events.append(event)
                if session.follow(event) and (line := session.progress_line()) != shown:
                    shown = line  # a notification's progress must rise: one per new line
                    await progress(len(events), None, line)
        except asyncio.CancelledError:
            await stop_quietly(nc, accepted.session_id, "the MCP client cancelled the call")
            raise
        final = events[-1] if events else None
        if isinstance(final, SessionFailed):
            raise ToolError(f"the session failed: {final.reason}: {final.detail}")
        if not isinstance(final, FinalAnswer):
            raise ToolError("the session ended without an answer")
        return answered(accepted, events, final)


def answered(accepted: Accepted, events: list[SessionEvent], final: FinalAnswer) -> str:
    """The answer, then a short account of the session a person can check."""
    stages = [
        f"- {e.stage}: {e.expected} call(s); {e.reason}"
        for e in events
        if isinstance(e, StageStarted)
    ]
    seconds = final.latency_ms.get("total", 0.0) / 1000
    how = final.strategy + (f" ({final.selected}'s answer)" if final.selected else "")
    preset = f", preset {accepted.preset}" if accepted.preset else ""
    return "\n".join(
        [
            final.answer,
            "",
            "---",
            f"Council: {', '.join(accepted.members)}; chairman {accepted.chairman}; "
            f"strategy {accepted.strategy}{preset}. Concluded by {how} in {seconds:.1f} s.",
            *stages,
            f"Conversation {accepted.conversation} (pass it as `conversation` to follow up).",
        ]
    )


def server(council: Council) -> MCPServer:
    mcp = MCPServer(
        "council",
        instructions="A council of local models: several answer, review each other "
        "anonymously, and a chairman writes the final answer. Ask it what one model "
        "might get wrong; follow up by passing the conversation id it returns.",
    )

    @mcp.tool()
    async def ask_council(
        question: str,
        members: list[str] | None = None,
        strategy: str | None = None,
        preset: str | None = None,
        conversation: str | None = None,
        *,
        ctx: Context,
    ) -> str:
        """Ask the council a question; returns its final answer and what each stage did.
        members: models (MODEL, MODEL#2 for a second sample, MODEL+code to answer by a
        program); strategy: how the chairman concludes; preset: a named council
        (council://presets); conversation: the id of an earlier answer, to follow up."""

        async def progress(done: float, total: float | None, message: str) -> None:
            await ctx.report_progress(done, total, message)

        asked = Question(
            question=question,
            members=members or [],
            strategy=strategy or "",
            preset=preset or "",
            conversation=conversation or "",
        )
        try:
            return await council.ask(await council.nc(ctx), asked, progress)
        except CouncilError as exc:
            raise ToolError(str(exc)) from None

    @mcp.tool()
    async def list_conversations(search: str | None = None, *, ctx: Context) -> str:
        """Your stored conversations, newest first (those containing ``search``): id,
        when it started, its turns and its first question, as JSON."""
        try:
            nc = await council.nc(ctx)
            threads = await conversations(nc, whoami(nc))
        except CouncilError as exc:
            raise ToolError(str(exc)) from None
        shown = [t for t in threads.values() if not search or export.matches(t, search)]
        listed = [
            {"conversation": t[0].conversation, "started": export.when(t[0].ts),
             "turns": len(t), "first_question": export.title(t), "preset": t[0].preset}
            for t in sorted(shown, key=lambda t: t[0].ts, reverse=True)
        ]  # fmt: skip
        return json.dumps(listed, ensure_ascii=False)

    @mcp.tool()
    async def read_conversation(conversation_id: str, *, ctx: Context) -> str:
        """One conversation as Markdown: every question and the council's answer."""
        try:
            turns = await conversation(await council.nc(ctx), conversation_id)
        except CouncilError as exc:
            raise ToolError(str(exc)) from None
        if not turns:
            raise ToolError(f"no conversation {conversation_id} is stored")
        return export.markdown(turns)

    @mcp.resource(PRESETS_URI, name="presets", mime_type="application/json")
    async def named_councils() -> str:
        """The chairman's defaults and named councils: members, chairman, strategy,
        review mode, and any model no agent serves now."""
        return msgspec.json.encode(await presets(await council.nc())).decode()

    return mcp


class Guard:
    """401 unless a request carries the API's key or a person's login that the NATS
    server accepts (ASGI; the lifespan passes through, where the SDK runs its sessions)."""

    def __init__(self, app: ASGIApp, logins: Logins) -> None:
        self.app = app
        self.logins = logins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"").decode(errors="replace")
            why = "a valid API key or NAME:PASSWORD is required (Authorization: Bearer …)"
            try:
                allowed = await self.logins.person(given) is not None or self.logins.is_service(
                    given
                )
            except Refused as exc:
                allowed, why = False, str(exc)
            if not allowed:
                body = msgspec.json.encode({"error": why})
                headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def http_app(mcp: MCPServer, council: Council) -> Any:
    """Streamable HTTP on /mcp, behind the key (or a person's login)."""
    app = mcp.streamable_http_app(streamable_http_path="/mcp", host=council.config.address)
    return Guard(app, council.logins)
