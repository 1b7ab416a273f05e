"""`council conversations`, `council export`, `council delete`: what was asked, kept on
the stream, listed, exported and deleted."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from nats.aio.client import Client
from rich.console import Console
from rich.table import Table

from council.assembly.settings import Settings
from council.bus.client import export
from council.bus.client.ask import forget
from council.bus.errors import CouncilError
from council.bus.messages import Turn
from council.bus.transport.connection import connect, whoami
from council.bus.transport.stream import conversation, conversations, stored_events


def conversations_table(threads: dict[str, list[Turn]], search: str = "") -> Table:
    """The stored conversations, newest first (those containing ``search``)."""
    shown = [turns for turns in threads.values() if not search or export.matches(turns, search)]
    table = Table(
        title=f"{len(shown)} conversation(s)" + (f" matching {search!r}" if search else "")
    )
    table.add_column("conversation", no_wrap=True)  # an id to copy whole
    for column in ("started", "turns", "first question"):
        table.add_column(column)
    for turns in sorted(shown, key=lambda t: t[0].ts, reverse=True):
        table.add_row(
            turns[0].conversation, export.when(turns[0].ts), str(len(turns)),
            export.title(turns),
        )  # fmt: skip
    return table


async def exported(
    nc: Client, conversation_id: str, *, as_json: bool, full: bool
) -> tuple[bytes, int]:
    """A conversation as Markdown (``full``: every opinion and review too) or JSON (its
    turns and every event of its sessions), and how many turns it has."""
    turns = await conversation(nc, conversation_id)
    if not turns:
        raise CouncilError(f"no conversation {conversation_id} is stored")
    sessions = (
        {t.session_id: await stored_events(nc, t.session_id) for t in turns}
        if as_json or full
        else None
    )
    if as_json:
        return export.as_json(turns, sessions or {}), len(turns)
    return export.markdown(turns, sessions).encode(), len(turns)


async def run_list(settings: Settings, search: str = "", *, everyone: bool = False) -> int:
    nc = await connect(settings.nats_url, name="council-list", credentials=settings.credentials)
    try:
        threads = await conversations(nc, "*" if everyone else whoami(nc))
    finally:
        await nc.close()
    Console().print(conversations_table(threads, search))
    return 0


async def run_export(
    settings: Settings, conversation_id: str, *, as_json: bool, full: bool, out: Path | None
) -> int:
    nc = await connect(settings.nats_url, name="council-export", credentials=settings.credentials)
    try:
        data, count = await exported(nc, conversation_id, as_json=as_json, full=full)
    finally:
        await nc.close()
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        await asyncio.to_thread(out.write_bytes, data)
        print(f"exported {count} turn(s) to {out}", file=sys.stderr)
    return 0


async def run_delete(settings: Settings, conversation_id: str) -> int:
    nc = await connect(settings.nats_url, name="council-delete", credentials=settings.credentials)
    try:
        forgotten = await forget(nc, conversation_id)
    finally:
        await nc.close()
    if not forgotten.sessions:
        raise CouncilError(f"no conversation {conversation_id} is stored")
    print(f"deleted conversation {conversation_id}: {len(forgotten.sessions)} session(s)")
    return 0
