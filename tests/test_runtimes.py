"""The runtime registry: every runtime module offers its kind, and the router asks them."""

from __future__ import annotations

from pathlib import Path

import pytest

from council.agents.catalogue import CATALOGUE
from council.agents.runtimes.base import Capacity, RuntimeOptions
from council.agents.runtimes.router import build_runtime, kinds, prepare
from council.bus.errors import ModelNotFound


async def test_runtimes_are_found_in_their_package_and_an_unknown_one_is_named(
    tmp_path: Path,
) -> None:
    """Each runtime module offers its KIND: ``auto`` asks Ollama, then an
    OpenAI-compatible server, then embedded; the scripted runtime only when named; an
    unknown name lists the choices."""
    assert list(kinds()) == ["ollama", "openai", "embedded", "scripted"]
    assert [k.name for k in kinds().values() if k.auto] == ["ollama", "openai", "embedded"]
    options = RuntimeOptions(models_dir=str(tmp_path), ollama_host="http://127.0.0.1:9")
    routed = await build_runtime(["a", "b"], "scripted", options)
    assert routed.models == ["a", "b"]
    assert routed.capacity() == Capacity()
    with pytest.raises(ValueError, match="auto, ollama, openai, embedded, scripted"):
        await build_runtime(["a"], "nope", options)
    with pytest.raises(ModelNotFound, match="smollm2-135m"):  # no Ollama there: embedded's
        await build_runtime(["nope"], "auto", options)


def test_a_runtime_prepares_its_models_before_the_first_start(tmp_path: Path) -> None:
    """`council up` asks the runtimes to fetch what they need: the embedded kind pulls a
    catalogue model that is not installed (a real pull, with progress per step) and leaves
    a GGUF path and an installed model alone; the scripted kind needs nothing."""
    options = RuntimeOptions(models_dir=str(tmp_path), ollama_host="http://127.0.0.1:9")
    steps: list[tuple[str, int, int]] = []
    prepare(["smollm2-135m", "my.gguf"], "scripted", options, lambda *s: steps.append(s))
    assert steps == []
    assert not CATALOGUE["smollm2-135m"].installed(tmp_path)
    prepare(["smollm2-135m", "my.gguf"], "auto", options, lambda *s: steps.append(s))
    assert CATALOGUE["smollm2-135m"].installed(tmp_path)
    assert ("smollm2-135m assemble", 1, 1) in steps
    assert all(step.startswith("smollm2-135m ") for step, _, _ in steps)
    steps.clear()
    prepare(["smollm2-135m"], "embedded", options, lambda *s: steps.append(s))
    assert steps == []
    with pytest.raises(ValueError, match="choose one of"):
        prepare(["smollm2-135m"], "nope", options, lambda *s: None)
