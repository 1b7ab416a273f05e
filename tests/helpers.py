"""Test helpers: event collection, an agent service's calls running out, a web app
served, a session's events or a conversation's turns read from a council in other
processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from nats.aio.client import Client

from council.agents.service import AgentService
from council.bus.events import SessionEvent
from council.bus.messages import Turn
from council.bus.transport.connection import connect
from council.bus.transport.stream import conversation, stored_events

T = TypeVar("T")


class Collected:
    """An event sink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    async def __call__(self, event: SessionEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


async def settled_agents(agents: AgentService) -> None:
    """Until ``agents`` serves no call: a cancelled call ends at once, so a few seconds
    of polling tell a stopped call from one that runs on."""
    for _ in range(200):
        if agents.in_flight == 0 and not any(s.taken for s in agents.statuses()):
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"agents still serve {agents.in_flight} call(s)")


async def serving(agents: AgentService, count: int) -> None:
    """Until ``agents`` serves ``count`` calls (a session's requests are out)."""
    for _ in range(400):
        if agents.in_flight == count:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"agents serve {agents.in_flight} call(s), not {count}")


_GENERATING = """
import sys, time
from pathlib import Path
from council.agents.runtimes.cores import HostCores
HostCores(Path(sys.argv[1]), 1).hold()
print("generating", flush=True)
time.sleep(600)
"""


@contextmanager
def generating_elsewhere(cores_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """Another council process of the host, generating (it holds its share of the
    cores) until the block ends or the test kills it."""
    process = subprocess.Popen(
        [sys.executable, "-c", _GENERATING, str(cores_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "generating"
        yield process
    finally:
        process.kill()
        process.wait()


@asynccontextmanager
async def served(app: Any, port: int, *, graceful_s: int | None = None) -> AsyncIterator[None]:
    """``app`` served by uvicorn in this loop on ``port`` until the block ends.
    ``graceful_s`` bounds how long a request that never ends holds up the stop."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    config.timeout_graceful_shutdown = graceful_s
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(500):  # uvicorn says it has started with a flag only
        if server.started or serving.done():
            break
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield
    finally:
        server.should_exit = True
        await serving


async def stored_at(url: str, session_id: str) -> list[SessionEvent]:
    """The session's stored events, read over a connection of their own to ``url``."""
    return await _read_at(url, lambda nc: stored_events(nc, session_id))


async def turns_at(url: str, conversation_id: str) -> list[Turn]:
    """The conversation's stored turns, read over a connection of their own to ``url``."""
    return await _read_at(url, lambda nc: conversation(nc, conversation_id))


async def _read_at(url: str, read: Callable[[Client], Awaitable[T]]) -> T:
    nc = await connect(url, name="check")
    try:
        return await read(nc)
    finally:
        await nc.close()
