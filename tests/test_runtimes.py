"""The runtime registry: every runtime module offers its kind, and the router asks them."""

from __future__ import annotations

from pathlib import Path

import pytest

from council.agents.runtimes.base import Capacity, RuntimeOptions
from council.agents.runtimes.router import build_runtime, kinds
from council.bus.errors import ModelNotFound


async def test_runtimes_are_found_in_their_package_and_an_unknown_one_is_named(
    tmp_path: Path,
) -> None:
    """Each runtime module offers its KIND: ``auto`` asks Ollama, then an
    OpenAI-compatible server, then embedded; the scripted runtime only when named; an
    unknown name lists the choices."""
    assert list(kinds()) == ["ollama", "openai", "embedded", "scripted"]
    assert [k.name for k in kinds().values() if k.auto] == ["ollama", "openai", "embedded"]
    options = RuntimeOptions(models_dir=tmp_path, ollama_host="http://127.0.0.1:9")
    routed = await build_runtime(["a", "b"], "scripted", options)
    assert routed.models == ["a", "b"]
    assert routed.capacity() == Capacity()
    with pytest.raises(ValueError, match="auto, ollama, openai, embedded, scripted"):
        await build_runtime(["a"], "nope", options)
    with pytest.raises(ModelNotFound, match="smollm2-135m"):  # no Ollama there: embedded's
        await build_runtime(["nope"], "auto", options)
