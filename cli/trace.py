"""`council trace`: every message on ``council.>``, one readable line each, like `nats sub`."""

from __future__ import annotations

import json
import sys
from datetime import datetime

from nats.aio.msg import Msg

from council.assembly.roles import wait_for_signal
from council.assembly.settings import Settings
from council.bus import subjects
from council.bus.transport.connection import connect


def format_message(subject: str, data: bytes) -> str:
    stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
    try:
        body = json.dumps(json.loads(data), ensure_ascii=False)
    except (ValueError, UnicodeDecodeError):
        body = f"<{len(data)} bytes, not JSON> {data[:80]!r}"
    return f"{stamp} {subject} {body}"


async def run_trace(settings: Settings, *, live: bool, health: bool) -> int:
    nc = await connect(settings.nats_url, name="council-trace", credentials=settings.credentials)

    async def on_message(msg: Msg) -> None:
        if not live and msg.subject.startswith("council.live."):
            return
        if not health and msg.subject.startswith("council.health."):
            return
        print(format_message(msg.subject, msg.data), flush=True)

    await nc.subscribe(subjects.ALL, cb=on_message)
    await nc.flush()
    print(f"tracing {subjects.ALL} on {settings.nats_url} (Ctrl-C to stop)", file=sys.stderr)
    await wait_for_signal()
    await nc.close()
    return 0
