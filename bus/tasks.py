"""Stopping tasks for sure.

On Python 3.11, ``asyncio.wait_for`` (inside nats-py's ``request``) swallows a
cancellation that arrives just as its future completes, so one ``cancel()``
can be lost and a task stopped on shutdown may run on to its next deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], retry_s: float = 0.2) -> None:
    """Cancel until every task is done, repeating a cancellation that was swallowed."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=retry_s)
