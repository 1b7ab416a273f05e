"""Test helpers: event collection."""

from __future__ import annotations

from council.bus.messages import (
    SessionEvent,
)


class Collected:
    """An event sink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    async def __call__(self, event: SessionEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]
