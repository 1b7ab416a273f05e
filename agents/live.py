"""Token deltas, batched every ~50 ms on core NATS (live, never stored)."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from council.bus import subjects
from council.bus.codec import encode
from council.bus.messages import Stage, TokenDelta


class DeltaPublisher:
    """Collects streamed text; a background task publishes what arrived each interval."""

    def __init__(
        self, nc: Client, session_id: str, stage: Stage, member: str, interval_s: float = 0.05
    ) -> None:
        self.nc = nc
        self.session_id = session_id
        self.stage: Stage = stage
        self.member = member
        self.subject = subjects.live(session_id, stage, member)
        self.interval_s = interval_s
        self._buffer: list[str] = []
        self._index = 0
        self._flusher: asyncio.Task[None] | None = None

    def add(self, text: str) -> None:
        self._buffer.append(text)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._flush(done=False)

    async def _flush(self, *, done: bool) -> None:
        if not self._buffer and not done:
            return
        text, self._buffer = "".join(self._buffer), []
        delta = TokenDelta(
            session_id=self.session_id,
            stage=self.stage,
            member=self.member,
            text=text,
            index=self._index,
            done=done,
        )
        self._index += 1
        await self.nc.publish(self.subject, encode(delta))

    async def close(self) -> None:
        if self._flusher:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self._flush(done=True)
