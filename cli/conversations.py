"""`council conversations`, `council export`, `council delete`: what was asked, kept on
the stream, listed, exported and deleted."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from council.bus import transcript
from council.bus.ask import conversation, conversations, forget, stored_events
from council.bus.client import connect
from council.bus.errors import CouncilError
from council.cli.settings import Settings


async def run_list(settings: Settings, search: str = "") -> int:
    nc = await connect(settings.nats_url, name="council-list", credentials=settings.credentials)
    try:
        threads = await conversations(nc)
    finally:
        await nc.close()
    shown = [turns for turns in threads.values() if not search or transcript.matches(turns, search)]
    table = Table(
        title=f"{len(shown)} conversation(s)" + (f" matching {search!r}" if search else "")
    )
    for column in ("conversation", "started", "turns", "first question"):
        table.add_column(column)
    for turns in sorted(shown, key=lambda t: t[0].ts, reverse=True):
        table.add_row(
            turns[0].conversation, transcript.when(turns[0].ts), str(len(turns)),
            transcript.title(turns),
        )  # fmt: skip
    Console().print(table)
    return 0


async def run_export(
    settings: Settings, conversation_id: str, *, as_json: bool, full: bool, out: Path | None
) -> int:
    """Markdown (with ``full``, every opinion and review too) or JSON (every event)."""
    nc = await connect(settings.nats_url, name="council-export", credentials=settings.credentials)
    try:
        turns = await conversation(nc, conversation_id)
        if not turns:
            raise CouncilError(f"no conversation {conversation_id} is stored")
        sessions = (
            {t.session_id: await stored_events(nc, t.session_id) for t in turns}
            if as_json or full
            else None
        )
    finally:
        await nc.close()
    data = (
        transcript.as_json(turns, sessions or {})
        if as_json
        else transcript.markdown(turns, sessions).encode()
    )
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        await asyncio.to_thread(out.write_bytes, data)
        print(f"exported {len(turns)} turn(s) to {out}", file=sys.stderr)
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
