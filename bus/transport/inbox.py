"""One wildcard inbox subscription for many requests that each get several replies.

nats-py's ``request`` resolves on the first reply; an agent answers with progress
(``Working``) before its result, so the requester keeps one subscription on
``<inbox>.*`` and routes each message to its request's queue by the last token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.nuid import NUID

from council.bus import subjects

log = structlog.get_logger()

NO_RESPONDERS = "503"
SETTLE_S = 0.3
"""nats-server 2.15 can answer "no responders" for a few milliseconds after another
connection's subscription was flushed (measured here: 1 request in 12 right after a
subscribe; a retry 50 ms later always got through): re-asking for this long keeps a
responder that has just started from looking missing."""


def answerable(msg: Msg) -> bool:
    """Whether a request may be answered: its reply subject is an inbox.

    Anything else is refused and logged, never answered: a responder may publish
    to any reply subject (``allow_responses``), so answering a forged one such as
    ``council.session.<id>.final_answer`` would write a foreign message there.
    """
    if subjects.is_inbox(msg.reply):
        return True
    log.warning("reply_subject_refused", subject=msg.subject, reply=msg.reply or None)
    return False


def is_no_responders(msg: Msg) -> bool:
    """The server's empty status reply to a request nobody subscribes to."""
    return not msg.data and (msg.headers or {}).get("Status") == NO_RESPONDERS


class Settling:
    """The window in which a "no responders" is asked again rather than believed."""

    def __init__(self, settle_s: float = SETTLE_S) -> None:
        self.until = time.monotonic() + settle_s

    async def again(self) -> bool:
        """Whether to re-ask now (after a short pause); False once the window closed."""
        if time.monotonic() >= self.until:
            return False
        await asyncio.sleep(0.05)
        return True


class ReplyInbox:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix = nc.new_inbox()
        self._nuid = NUID()
        self._queues: dict[str, asyncio.Queue[Msg]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._route)

    async def stop(self) -> None:
        if self._sub:
            await self._sub.unsubscribe()
            self._sub = None

    @asynccontextmanager
    async def open(self) -> AsyncIterator[tuple[str, asyncio.Queue[Msg]]]:
        """A fresh reply subject and the queue its messages arrive on."""
        if self._sub is None:
            await self.start()
        token = self._nuid.next().decode()
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._queues[token] = queue
        try:
            yield f"{self._prefix}.{token}", queue
        finally:
            del self._queues[token]

    async def _route(self, msg: Msg) -> None:
        queue = self._queues.get(msg.subject.rsplit(".", 1)[-1])
        if queue is not None:  # a late reply to a request already settled is dropped
            queue.put_nowait(msg)
