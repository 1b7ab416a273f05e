"""A role process started from the settings: `council agents`, `council tools` and
`council chairman` (``wiring`` builds the roles themselves)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal

import structlog
from nats.aio.client import Client

from council.agents.runtimes.router import RoutedRuntime, build_runtime
from council.agents.service import AgentService
from council.assembly import wiring
from council.assembly.settings import Settings
from council.bus.transport.connection import connect
from council.bus.transport.health import default_node_name
from council.chairman import presets
from council.chairman.config import CouncilConfig
from council.chairman.service import ChairmanService
from council.chairman.strategies import STRATEGIES, UnknownStrategy
from council.tools.sandbox import Sandbox
from council.tools.service import ToolService

log = structlog.get_logger()


def council_config(settings: Settings) -> CouncilConfig:
    """The chairman's config, its strategy and reviewer weights checked before it starts."""
    if settings.defaults.strategy not in STRATEGIES:
        raise SystemExit(f"error: {UnknownStrategy(settings.defaults.strategy)}")
    try:
        settings.council.weights  # noqa: B018 - read now: an error is a start-up error
    except ValueError as exc:
        raise SystemExit(f"error: $COUNCIL_REVIEWER_WEIGHTS: {exc}") from None
    try:
        presets.table(settings.defaults.presets)
    except presets.BadPresets as exc:
        raise SystemExit(f"error: {exc}") from None
    return settings.council


async def runtime_for(settings: Settings, models: list[str]) -> RoutedRuntime:
    try:
        return await build_runtime(models, settings.runtime.runtime, settings.runtime)
    except ValueError as exc:
        raise SystemExit(f"error: $COUNCIL_RUNTIME: {exc}") from None


async def start_agents(
    nc: Client, settings: Settings, models: list[str], kinds: tuple[str, ...], role: str
) -> AgentService:
    return await wiring.start_agents(
        nc,
        await runtime_for(settings, models),
        node=settings.health.node_of(role),
        kinds=kinds,
        concurrency=settings.agents.concurrency,
        heartbeat_s=settings.health.heartbeat,
    )


async def start_chairman(nc: Client, settings: Settings) -> ChairmanService:
    return await wiring.start_chairman(
        nc,
        settings.defaults,
        council_config(settings),
        # stable across restarts: a restarted chairman resumes the sessions of its name
        node=settings.health.node or default_node_name("chairman", unique=False),
        heartbeat_s=settings.health.heartbeat,
        **dataclasses.asdict(settings.chairman),
    )


async def wait_for_signal() -> int:
    """The number of the signal that stopped us: a shell counts 128 + it as the exit."""
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[int] = loop.create_future()

    def stop(sig: int) -> None:
        if not stopped.done():
            stopped.set_result(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    return await stopped


async def _role_connection(settings: Settings, role: str) -> Client:
    """A role's connection: it waits for a server that is not up yet (started together)."""
    return await connect(
        settings.nats_url,
        name=f"council-{role}",
        credentials=settings.credentials,
        initial_wait_s=30.0,
    )


async def serve_agents(settings: Settings) -> None:
    nc = await _role_connection(settings, "agents")
    service = await start_agents(
        nc, settings, settings.agent_models, ("opinion", "review", "synthesize"), "agents"
    )
    log.info("agents_ready", models=service.models, nats=settings.nats_url)
    await wait_for_signal()
    await service.stop()
    await service.runtime.close()
    await nc.drain()


async def serve_tools(settings: Settings) -> None:
    nc = await _role_connection(settings, "tools")
    service = ToolService(
        nc,
        Sandbox(settings.sandbox),
        node=settings.health.node_of("tools"),
        concurrency=settings.tools.concurrency,
        heartbeat_s=settings.health.heartbeat,
    )
    await service.start()
    log.info("tools_ready", nats=settings.nats_url, sandbox=service.sandbox.unavailable or "bwrap")
    await wait_for_signal()
    await service.stop()
    await nc.drain()


async def serve_chairman(settings: Settings, *, local_agent: bool) -> None:
    nc = await _role_connection(settings, "chairman")
    agent = None
    if local_agent:
        agent = await start_agents(
            nc, settings, [settings.defaults.chairman], ("synthesize",), "chairman-agent"
        )
    service = await start_chairman(nc, settings)
    log.info("chairman_ready", nats=settings.nats_url, local_agent=local_agent)
    await wait_for_signal()
    await service.stop()
    if agent:
        await agent.stop()
        await agent.runtime.close()
    await nc.drain()
