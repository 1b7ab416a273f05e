"""Least-busy dispatch: a request goes to the agent with room, by name, on a real bus."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import structlog
from nats.aio.client import Client

from council.agents.runtimes.router import RoutedRuntime
from council.agents.runtimes.scripted import HANG, ScriptedRuntime
from council.agents.service import AgentService
from council.assembly import wiring
from council.bus import subjects
from council.bus.client.ask import follow, submit
from council.bus.codec import encode
from council.bus.events import FinalAnswer
from council.bus.messages import ChatMessage, OpinionRequest, Question
from council.bus.transport.connection import connect
from council.bus.transport.server import EmbeddedNats
from council.chairman.admission import Defaults
from council.chairman.service import ChairmanService

MODELS = ["m1", "m2", "m3"]


@dataclass
class Agent:
    node: str
    runtime: ScriptedRuntime
    service: AgentService


@pytest.fixture
async def agents(nats_server: EmbeddedNats) -> AsyncIterator[dict[str, Agent]]:
    started: dict[str, Agent] = {}
    for name in ("a", "b"):
        # A node name of this test alone: the server may not have dropped the last
        # test's agent "b" from the queue group on its by-name subject yet, and would
        # hand it a request.
        node = f"{name}-{secrets.token_hex(3)}"
        runtime = ScriptedRuntime(MODELS)
        nc = await connect(nats_server.url, name=f"agent-{node}")
        service = await wiring.start_agents(
            nc, RoutedRuntime.serving(runtime, MODELS), node=node, heartbeat_s=0.2
        )
        started[name] = Agent(node, runtime, service)
    yield started
    for agent in started.values():
        await agent.service.stop()
        await agent.service.nc.close()


async def occupy(nc: Client, agent: Agent, calls: int) -> None:
    """``calls`` opinion requests for m1 sent to ``agent`` by name, that never finish."""
    node = agent.node
    agent.runtime.enqueue("m1", *[HANG] * calls)
    for i in range(calls):
        request = OpinionRequest(
            session_id=f"busy{i}", member="m1", model="m1",
            messages=[ChatMessage("user", "hang")], timeout_s=300,
        )  # fmt: skip
        await nc.publish(
            subjects.agent_on("m1", "opinion", node), encode(request), reply=nc.new_inbox()
        )
    for _ in range(100):
        if agent.service.statuses()[0].taken == calls:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"agent {node} did not take {calls} requests")


async def until_chosen(chairman: ChairmanService, node: str) -> None:
    """Until the heartbeats the chairman heard make ``node`` the least busy for m1."""
    for _ in range(200):
        if chairman.roster.least_busy("m1", "opinion", {}) == node:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the chairman never saw {node} as the least busy")


async def session(nc: Client, chairman_nc: Client, idle: Agent) -> tuple[FinalAnswer, list[dict]]:
    chairman = await wiring.start_chairman(
        chairman_nc, Defaults(tuple(MODELS), "m1"), node="chair", heartbeat_s=0.2
    )
    try:
        await until_chosen(chairman, idle.node)  # heartbeats say the other is busy
        with structlog.testing.capture_logs() as logs:
            accepted = await submit(nc, Question(question="What is 2+2?"))
            events = [e async for e in follow(nc, accepted.session_id, timeout_s=30)]
    finally:
        await chairman.stop()
    final = events[-1]
    assert isinstance(final, FinalAnswer)
    return final, logs


def opinions_for(runtime: ScriptedRuntime, model: str) -> int:
    return sum(call.model == model and call.schema is None for call in runtime.history)


async def test_a_request_goes_to_the_agent_with_room_not_to_a_busy_one(
    nats_server: EmbeddedNats, nc: Client, agents: dict[str, Agent]
) -> None:
    """Agent a has taken two requests for m1 that do not finish; b has none. Every call
    of the session for m1 then goes to b (at random, a would get about half)."""
    await occupy(nc, agents["a"], 2)
    chairman_nc = await connect(nats_server.url, name="chair")
    try:
        await session(nc, chairman_nc, agents["b"])
    finally:
        await chairman_nc.close()
    assert opinions_for(agents["a"].runtime, "m1") == 2  # only the two that hang
    assert opinions_for(agents["b"].runtime, "m1") >= 1
    assert not [c for c in agents["a"].runtime.history if c.model == "m1" and c.schema]


async def test_a_chosen_agent_that_is_gone_passes_its_request_to_any_other(
    nats_server: EmbeddedNats, nc: Client, agents: dict[str, Agent]
) -> None:
    """b is busier, so a is chosen; but a has stopped since its last heartbeat: the
    request goes to the queue group at once, and b answers it."""
    await occupy(nc, agents["b"], 1)
    chairman_nc = await connect(nats_server.url, name="chair")
    try:
        chairman = await wiring.start_chairman(
            chairman_nc, Defaults(tuple(MODELS), "m1"), node="chair", heartbeat_s=0.2
        )
        await until_chosen(chairman, agents["a"].node)
        await agents["a"].service.stop()  # its last heartbeat still says it is idle
        with structlog.testing.capture_logs() as logs:
            accepted = await submit(nc, Question(question="What is 2+2?"))
            events = [e async for e in follow(nc, accepted.session_id, timeout_s=30)]
        await chairman.stop()
    finally:
        await chairman_nc.close()
    assert isinstance(events[-1], FinalAnswer)
    assert "chosen_agent_gone" in [e["event"] for e in logs]
