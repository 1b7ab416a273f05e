"""A council across a 3-node NATS cluster, and the COUNCIL stream replicated on it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nats.errors
import pytest
import structlog
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StreamConfig, StreamConsumerLimits, StreamInfo
from nats.js.errors import NotFoundError, ServiceUnavailableError

from bench.cluster import Cluster, start_cluster
from bench.faults import Driver, Fleet
from council.agents.runtimes.router import RoutedRuntime
from council.agents.runtimes.scripted import ScriptedRuntime
from council.agents.service import AgentService
from council.assembly.wiring import local_council
from council.bus import subjects
from council.bus.client.ask import follow, submit
from council.bus.errors import CouncilError
from council.bus.events import FinalAnswer, SessionEvent
from council.bus.messages import Question
from council.bus.transport.connection import connect
from council.bus.transport.server import EmbeddedNats
from council.bus.transport.stream import CONSUMER_IDLE_S, ensure_stream
from council.chairman.admission import Defaults
from council.chairman.service import ChairmanService

MODELS = ["m1", "m2", "m3"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    nodes = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield nodes
    nodes.stop()


@dataclass
class SpreadCouncil:
    chairman: ChairmanService
    agents: AgentService
    client: Client
    ready_s: float
    """From the cluster's first listen to the R3 stream existing (the meta leader election)."""


@pytest.fixture(scope="module")
async def council(cluster: Cluster) -> AsyncIterator[SpreadCouncil]:
    """Chairman on n1, agents on n2, a client on n3, started on a cold cluster:
    the chairman's ensure_stream is what waits for JetStream to be ready."""
    started = time.monotonic()
    runtime = ScriptedRuntime(MODELS)
    agents_nc = await connect(cluster.node("n2").url, name="agents")
    chairman_nc = await connect(cluster.node("n1").url, name="chairman")
    routed = RoutedRuntime.serving(runtime, MODELS)
    async with local_council(
        agents_nc, chairman_nc, routed, Defaults(tuple(MODELS), "m1"),
        heartbeat_s=0.5, stream_replicas=3,
    ) as spread:  # fmt: skip
        ready_s = time.monotonic() - started
        client = await connect(cluster.node("n3").url, name="client")
        yield SpreadCouncil(spread.chairman, spread.agents, client, ready_s)
    for nc in (client, agents_nc, chairman_nc):
        await nc.close()


async def ask(nc: Client, question: str) -> list[SessionEvent]:
    accepted = await submit(nc, Question(question=question))
    return [e async for e in follow(nc, accepted.session_id, timeout_s=30)]


async def replicated(nc: Client, timeout_s: float = 15.0) -> StreamInfo:
    """The COUNCIL stream's info once it has a leader and every replica is current."""
    js = nc.jetstream(timeout=1.0)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            info = await js.stream_info(subjects.STREAM)
            peers = (info.cluster.replicas or []) if info.cluster else []
            if info.cluster and info.cluster.leader and all(p.current for p in peers):
                return info
        except (nats.errors.Error, TimeoutError):
            pass  # no stream leader yet, or this connection is reconnecting
        if time.monotonic() > deadline:
            raise AssertionError(f"COUNCIL stream not replicated within {timeout_s} s")
        await asyncio.sleep(0.2)


def node_of(nc: Client, cluster: Cluster) -> str:
    assert nc.connected_url is not None
    ports = [node.port for node in cluster.nodes]
    return cluster.names[ports.index(nc.connected_url.port)]


async def test_council_spread_over_three_nodes_answers_and_stream_has_three_replicas(
    cluster: Cluster, council: SpreadCouncil
) -> None:
    """Chairman, agents and client each on their own node: the session completes, and
    its events live on all three nodes."""
    assert council.ready_s < 15
    roles = (council.chairman.nc, council.agents.nc, council.client)
    assert [node_of(nc, cluster) for nc in roles] == ["n1", "n2", "n3"]
    events = await ask(council.client, "What is 2+2?")
    assert isinstance(events[-1], FinalAnswer)
    info = await replicated(council.client)
    assert info.config.num_replicas == 3
    assert info.cluster is not None
    assert info.cluster.name == "council"
    peers = {info.cluster.leader, *(p.name for p in info.cluster.replicas or [])}
    assert peers == set(cluster.names)
    assert info.state.messages >= len(events)
    print(f"R3 stream ready {council.ready_s:.1f} s after the cluster started")


async def test_losing_the_stream_leader_node_loses_no_event_and_the_council_goes_on(
    cluster: Cluster, council: SpreadCouncil
) -> None:
    """SIGKILL the node that leads the stream: the others elect a new leader, the past
    session replays whole, and the roles on the lost node reconnect for the next one."""
    before = await ask(council.client, "before")
    leader = (await replicated(council.client)).cluster.leader  # type: ignore[union-attr]
    cluster.kill(leader)
    led_s, readable_s = await recovered(council.client, leader)
    replay = [e async for e in follow(council.client, before[0].session_id, timeout_s=15)]
    assert replay == before
    after = await ask(council.client, "after")
    assert isinstance(after[-1], FinalAnswer)
    print(f"lost {leader}: new stream leader {led_s:.1f} s, consumers again {readable_s:.1f} s")


async def recovered(nc: Client, lost: str, timeout_s: float = 20.0) -> tuple[float, float]:
    """Seconds until the stream has a leader other than ``lost``, and until a reader can
    open a consumer again: that goes through the JetStream meta leader, which may have
    been on the lost node too and is elected on its own, sometimes seconds later."""
    js = nc.jetstream(timeout=1.0)
    started = time.monotonic()
    led: float | None = None
    while time.monotonic() - started < timeout_s:
        try:
            if led is None:
                info = await js.stream_info(subjects.STREAM)
                if info.cluster and info.cluster.leader not in (None, lost):
                    led = time.monotonic() - started
            if led is not None:
                probe = await js.add_consumer(subjects.STREAM, ConsumerConfig(inactive_threshold=2))
                await js.delete_consumer(subjects.STREAM, probe.name)
                return led, time.monotonic() - started
        except (nats.errors.Error, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"JetStream did not recover within {timeout_s} s of losing {lost}")


class FlakyJetStream:
    """stream_info fails as a cluster electing its leader does, ``fails`` times."""

    def __init__(self, fails: int, existing_replicas: int | None = None) -> None:
        self.fails = fails
        self.existing = existing_replicas
        self.added: list[Any] = []
        self.updated: list[StreamConfig] = []

    async def stream_info(self, name: str) -> Any:
        if self.fails:
            self.fails -= 1
            raise ServiceUnavailableError
        if self.existing is None:
            raise NotFoundError
        config = StreamConfig(name=subjects.STREAM, num_replicas=self.existing)
        return SimpleNamespace(config=config)  # made by an older council: no consumer limit

    async def add_stream(self, config: Any) -> None:
        self.added.append(config)

    async def update_stream(self, config: StreamConfig) -> None:
        self.updated.append(config)


async def test_ensure_stream_waits_out_an_election_with_a_log_line() -> None:
    js = FlakyJetStream(fails=2)
    with structlog.testing.capture_logs() as logs:
        await ensure_stream(js, 3)  # type: ignore[arg-type]
    assert [c.num_replicas for c in js.added] == [3]
    assert [e["event"] for e in logs] == [
        "jetstream_not_ready",
        "stream_created",
        "jetstream_ready",
    ]


async def test_ensure_stream_gives_up_after_wait_s_with_a_clear_error() -> None:
    with pytest.raises(CouncilError, match="within 0.3 s"):
        await ensure_stream(FlakyJetStream(fails=1000), 3, wait_s=0.3)  # type: ignore[arg-type]


async def test_ensure_stream_leaves_an_existing_replica_count_and_says_so() -> None:
    js = FlakyJetStream(fails=0, existing_replicas=1)
    with structlog.testing.capture_logs() as logs:
        await ensure_stream(js, 3)  # type: ignore[arg-type]
    assert js.added == []
    differ = [e for e in logs if e["event"] == "stream_replicas_differ"]
    assert [(e["replicas"], e["configured"]) for e in differ] == [(1, 3)]
    # … and gives it the consumer limit that readers' consumers rely on and the
    # conversations' subject, nothing else
    assert [(c.num_replicas, c.consumer_limits, c.subjects) for c in js.updated] == [
        (
            1,
            StreamConsumerLimits(inactive_threshold=CONSUMER_IDLE_S),
            [subjects.SESSIONS, subjects.CONVERSATIONS],
        )
    ]


async def test_replicas_on_a_single_server_is_a_clear_error(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "store").start()
    try:
        nc = await connect(server.url, name="single")
        with pytest.raises(CouncilError, match="3 replica.*non-clustered"):
            await ensure_stream(nc.jetstream(), 3)
        await nc.close()
    finally:
        server.stop()


async def test_the_fault_campaign_restarts_a_killed_node_and_reports_a_failed_recovery(
    tmp_path: Path,
) -> None:
    """The campaign once killed a NATS node whose restart failed, carried on with it
    down and reported success: a node it kills now runs again, and a recovery that
    fails is in the result (and fails the campaign)."""
    nodes = start_cluster(tmp_path / "nats")
    try:
        driver = Driver(Fleet(nodes.urls, tmp_path, {}), nodes, random.Random(1), (1.0, 1.0))
        driver.inject("kill_nats_node")
        [killed] = [n for n in nodes.nodes if n.process and n.process.poll() is not None]
        driver._later(0, lambda: driver.cluster.node("n9").start())  # no such node
        stop = asyncio.Event()
        stop.set()
        await driver.run(stop)  # waits for the restart, 5 s after the kill
        assert killed.process is not None
        assert killed.process.poll() is None
        assert driver.injected == {"kill_nats_node": 1}
        assert driver.unrecovered == ["ValueError: 'n9' is not in list"]
    finally:
        nodes.stop()
