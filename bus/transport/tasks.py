"""Stopping tasks for sure, and a cheap repeating timer.

On Python 3.11, ``asyncio.wait_for`` (inside nats-py's ``request``) swallows a
cancellation that arrives just as its future completes, so one ``cancel()``
can be lost and a task stopped on shutdown may run on to its next deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], retry_s: float = 0.2) -> None:
    """Cancel until every task is done, repeating a cancellation that was swallowed."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=retry_s)


class Ticker:
    """Calls ``fire`` after ``first_s``, then every ``interval_s``, until cancelled: a
    timer, not a task, so one that is cancelled before it fires costs next to nothing."""

    def __init__(self, first_s: float, interval_s: float, fire: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._interval_s = interval_s
        self._fire = fire
        self._handle = self._loop.call_later(first_s, self._tick)

    def _tick(self) -> None:
        self._fire()
        self._handle = self._loop.call_later(self._interval_s, self._tick)

    def cancel(self) -> None:
        self._handle.cancel()
