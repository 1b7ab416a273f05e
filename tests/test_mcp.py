"""`council mcp` with the official SDK's own client: over stdio, as a desktop client
starts it from the README's configuration, against the real test council; over
streamable HTTP behind the API key, against a scripted one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent
from nats.aio.client import Client as Nats
from test_bus import council

from council.bus.transport.server import EmbeddedNats, free_port

README = Path(__file__).parent.parent / "README.md"


def text_of(result: Any) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


def desktop_config() -> dict[str, Any]:
    """The README's configuration for a desktop client (its JSON block under "MCP")."""
    readme = README.read_text()
    block = readme.split('"mcpServers"', 1)[1]
    return json.loads('{"mcpServers"' + block.split("```", 1)[0])["mcpServers"]["council"]


@pytest.mark.model
async def test_a_desktop_client_asks_the_real_council_with_progress_and_reads_it_back(
    council_processes: dict[str, str],
) -> None:
    """The README's command (`council mcp`, stdio) started by the SDK's client: the
    tools and the presets resource are listed; asking sends progress per finished
    call and returns the answer with its stages; the conversation is then listed and
    read; an empty question and an unknown preset are errors that name themselves."""
    configured = desktop_config()
    assert configured["command"].endswith("/.venv/bin/council")
    assert configured["args"] == ["mcp"]
    assert "COUNCIL_NATS_URL" in configured["env"]
    server = StdioServerParameters(  # this checkout's council, on the test council's bus
        command=sys.executable,
        args=["-m", "council.cli", *configured["args"]],
        env={**os.environ, **council_processes},
    )
    progress: list[tuple[float, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message))

    async with Client(server) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"ask_council", "list_conversations", "read_conversation"}
        presets = json.loads((await client.read_resource("council://presets")).contents[0].text)
        assert [p["name"] for p in presets][:2] == ["default", "fast"]

        asked = await client.call_tool(
            "ask_council", {"question": "What is 2 + 2?"}, progress_callback=on_progress
        )
        assert not asked.is_error, text_of(asked)
        answer = text_of(asked)
        assert "Council:" in answer
        assert "- opinions: 3 call(s)" in answer
        assert len(progress) >= 4  # asked, then each opinion at least
        steps = [d for d, _ in progress]
        assert steps == sorted(set(steps))  # rising, as MCP asks
        assert any("opinions 3/3" in (m or "") for _, m in progress)
        cid = answer.rsplit("Conversation ", 1)[1].split(" ", 1)[0]

        listed = json.loads(text_of(await client.call_tool("list_conversations", {})))
        assert cid in [c["conversation"] for c in listed]
        read = text_of(await client.call_tool("read_conversation", {"conversation_id": cid}))
        assert "## 1. What is 2 + 2?" in read

        empty = await client.call_tool("ask_council", {"question": "  "})
        assert empty.is_error
        assert "empty_question" in text_of(empty)
        unknown = await client.call_tool("ask_council", {"question": "Hi", "preset": "nosuch"})
        assert unknown.is_error
        assert "unknown_preset" in text_of(unknown)


async def test_mcp_over_http_asks_for_the_key_and_answers_with_progress(
    nats_server: EmbeddedNats, nc: Nats
) -> None:
    """`council mcp --mcp-transport http` as a process: no key or a wrong one is a 401;
    with the key the SDK's client asks and receives progress."""
    port = free_port()
    env = {
        **os.environ,
        "COUNCIL_NATS_URL": nats_server.url,
        "COUNCIL_API_KEY": "mcp-test-key",
        "COUNCIL_MCP_TRANSPORT": "http",
        "COUNCIL_MCP_PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}/mcp"
    async with council(nats_server):
        process = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "council.cli", "mcp"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert await asyncio.to_thread(status_of, url, "") == 401
            assert await asyncio.to_thread(status_of, url, "Bearer wrong") == 401
            progress: list[str | None] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append(message)

            headers = {"Authorization": "Bearer mcp-test-key"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                asked = await client.call_tool(
                    "ask_council",
                    {"question": "Which colour?", "preset": "fast"},
                    progress_callback=on_progress,
                )
            assert not asked.is_error, text_of(asked)
            assert "preset fast" in text_of(asked)
            assert any("opinions 3/3" in (m or "") for m in progress)
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 30)


def status_of(url: str, authorization: str) -> int:
    """The HTTP status of an MCP initialize request (the server starting meanwhile)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if authorization:
        headers["Authorization"] = authorization
    deadline = time.monotonic() + 60
    while True:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
