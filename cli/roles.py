"""Start the agents and chairman roles from settings (the only place that joins roles)."""

from __future__ import annotations

import asyncio
import signal

import structlog
from nats.aio.client import Client
from rich.console import Console

from council.agents.runtimes.base import RuntimeOptions
from council.agents.runtimes.router import RoutedRuntime, build_runtime, prepare
from council.agents.service import AgentService
from council.bus.client import connect
from council.bus.health import default_node_name
from council.chairman.admission import Defaults
from council.chairman.conductor import CouncilConfig
from council.chairman.service import ChairmanService
from council.chairman.strategies import UnknownStrategy, named
from council.cli import wiring
from council.cli.models import progress_bars
from council.cli.settings import Settings
from council.tools.sandbox import Limits, Sandbox
from council.tools.service import ToolService

log = structlog.get_logger()


def council_config(settings: Settings) -> CouncilConfig:
    try:
        strategy = named(settings.strategy, close_margin=settings.close_margin)
    except UnknownStrategy as exc:
        raise SystemExit(f"error: {exc}") from None
    return CouncilConfig(
        quorum=settings.quorum,
        opinions_deadline_s=settings.opinions_deadline,
        reviews_deadline_s=settings.reviews_deadline,
        synthesis_deadline_s=settings.synthesis_deadline,
        agent_silence_s=settings.agent_silence,
        strategy=strategy,
        settle_early=settings.settle_early,
        history_tokens=settings.history_tokens,
        temperature=settings.temperature,
        sample_temperature=settings.sample_temperature,
        reviewer_weights=settings.reviewer_weight_map,
        review_check_first=settings.review_check_first,
        program_rounds=settings.program_rounds,
        conclude=settings.conclude,
        opinion_max_tokens=settings.opinion_max_tokens,
        review_max_tokens=settings.review_max_tokens,
        synthesis_max_tokens=settings.synthesis_max_tokens,
    )


def runtime_options(settings: Settings) -> RuntimeOptions:
    return RuntimeOptions(
        models_dir=settings.models_path,
        ollama_host=settings.ollama_host,
        openai_base_url=settings.openai_base_url,
        openai_api_key=settings.openai_api_key,
        threads=settings.threads or None,
        n_ctx=settings.n_ctx,
        batch=settings.batch,
        share_cores=settings.share_cores,
        scripted_delay_s=settings.scripted_delay_ms / 1000,
    )


async def runtime_for(settings: Settings, models: list[str]) -> RoutedRuntime:
    try:
        return await build_runtime(models, settings.runtime, runtime_options(settings))
    except ValueError as exc:
        raise SystemExit(f"error: $COUNCIL_RUNTIME: {exc}") from None


def prepare_models(settings: Settings, models: list[str], console: Console) -> None:
    """What the runtimes must fetch before serving these models (a first run's
    download), with a progress bar per step."""
    try:
        with progress_bars(console) as progress:
            prepare(models, settings.runtime, runtime_options(settings), progress)
    except ValueError as exc:
        raise SystemExit(f"error: $COUNCIL_RUNTIME: {exc}") from None


async def start_agents(
    nc: Client, settings: Settings, models: list[str], kinds: tuple[str, ...], role: str
) -> AgentService:
    return await wiring.start_agents(
        nc,
        await runtime_for(settings, models),
        node=f"{settings.node}-{role}" if settings.node else default_node_name(role),
        kinds=kinds,
        concurrency=settings.concurrency,
        heartbeat_s=settings.heartbeat,
    )


async def start_chairman(nc: Client, settings: Settings) -> ChairmanService:
    return await wiring.start_chairman(
        nc,
        Defaults(tuple(settings.member_list), settings.chairman, settings.mode),  # type: ignore[arg-type]
        council_config(settings),
        # stable across restarts: a restarted chairman resumes the sessions of its name
        node=settings.node or default_node_name("chairman", unique=False),
        max_sessions=settings.max_sessions,
        heartbeat_s=settings.heartbeat,
        stream_replicas=settings.stream_replicas,
        lease_s=settings.session_lease,
    )


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


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


def sandbox_limits(settings: Settings) -> Limits:
    return Limits(
        wall_s=settings.sandbox_wall,
        cpu_s=settings.sandbox_cpu,
        memory_mb=settings.sandbox_memory,
        processes=settings.sandbox_processes,
    )


async def serve_tools(settings: Settings) -> None:
    nc = await _role_connection(settings, "tools")
    service = ToolService(
        nc,
        Sandbox(sandbox_limits(settings)),
        node=f"{settings.node}-tools" if settings.node else default_node_name("tools"),
        concurrency=settings.sandbox_concurrency,
        heartbeat_s=settings.heartbeat,
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
            nc, settings, [settings.chairman], ("synthesize",), "chairman-agent"
        )
    service = await start_chairman(nc, settings)
    log.info("chairman_ready", nats=settings.nats_url, local_agent=local_agent)
    await wait_for_signal()
    await service.stop()
    if agent:
        await agent.stop()
        await agent.runtime.close()
    await nc.drain()
