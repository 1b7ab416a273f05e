"""`council presets` (and `/preset` in `council chat`): the named councils a chairman
runs, as it runs them."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from council.assembly.settings import Settings
from council.bus.client.ask import presets
from council.bus.messages import DEFAULT_PRESET, PresetInfo
from council.bus.transport.connection import connect


def presets_table(listed: list[PresetInfo], chosen: str = "") -> Table:
    table = Table(title="presets: ask one with --preset NAME (or /preset NAME in a chat)")
    table.add_column("name", no_wrap=True)
    table.add_column("council")
    table.add_column("what it does")
    for p in listed:
        lacks = f" [red](no agent serves {', '.join(p.missing)})[/]" if p.missing else ""
        name = f"[bold]{p.name}[/] ◀" if p.name == (chosen or DEFAULT_PRESET) else p.name
        council = f"{', '.join(p.members)}; chairman {p.chairman}; {p.strategy}, {p.mode} reviews"
        table.add_row(name, escape(council), escape(p.summary) + lacks)
    return table


async def run_presets(settings: Settings) -> int:
    nc = await connect(settings.nats_url, name="council-presets", credentials=settings.credentials)
    try:
        listed = await presets(nc)
    finally:
        await nc.close()
    Console().print(presets_table(listed))
    return 0
