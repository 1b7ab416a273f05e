"""Which models the agents on the bus serve, from heartbeats and roster replies."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from council.bus import subjects
from council.bus.client.ask import roster as gather_roster
from council.bus.codec import decode_health
from council.bus.messages import ModelStatus

log = structlog.get_logger()


class Roster:
    def __init__(self, nc: Client, *, stale_after_s: float = 10.0) -> None:
        self.nc = nc
        self.stale_after_s = stale_after_s
        self._seen: dict[str, tuple[float, list[ModelStatus]]] = {}

    async def start(self) -> None:
        await self.nc.subscribe(subjects.HEALTH, cb=self._on_health)

    async def _on_health(self, msg: Msg) -> None:
        health = decode_health.read(msg, "bad_heartbeat")
        if health is not None and health.models:
            self._seen[health.node] = (time.monotonic(), health.models)

    def models(self, kind: str = "opinion") -> set[str]:
        """Models some fresh agent serves for ``kind`` (and has not failed to load)."""
        cutoff = time.monotonic() - self.stale_after_s
        return {
            m.name
            for seen, statuses in self._seen.values()
            if seen >= cutoff
            for m in statuses
            if kind in m.kinds and m.status != "error"
        }

    def least_busy(self, model: str, kind: str, sent: Mapping[str, list[float]]) -> str | None:
        """The agent node to send a ``kind`` request for ``model`` to: of the fresh ones
        serving it, the one with the fewest requests taken (as its last word said) plus
        those ``sent`` to it (their send times) since; ties drawn at random. None when
        fewer than two serve it: the queue group is as good then."""
        cutoff = time.monotonic() - self.stale_after_s
        loads: dict[str, int] = {}
        for node, (seen, statuses) in self._seen.items():
            if seen < cutoff:
                continue
            for m in statuses:
                if m.name == model and kind in m.kinds and m.status == "ready":
                    loads[node] = m.taken + sum(t > seen for t in sent.get(node, ()))
        if len(loads) < 2:
            return None
        low = min(loads.values())
        return random.choice([node for node, load in loads.items() if load == low])

    async def refresh(self, window_s: float = 0.3) -> None:
        """Ask every agent directly instead of waiting for heartbeats."""
        try:
            for info in await gather_roster(self.nc, window_s):
                self._seen[info.node] = (time.monotonic(), info.models)
        except Exception as exc:
            log.warning("roster_refresh_failed", error=repr(exc))
