"""A chairman's fair share of its session slots among people: a flood by one person
waits its turn instead of taking every slot, and another person's next question
starts in at most one session's time."""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(eq=False)
class Ticket:
    """One session's place: in line, then holding a slot, then gone."""

    order: int
    person: str
    turn: asyncio.Future[None]
    running: bool = False
    left: bool = False


@dataclass
class FairShare:
    """At most ``slots`` sessions run at once and at most ``per_person`` of one person;
    the others wait, at most ``queue`` per person. A freed slot goes to the waiting
    person with the fewest sessions running, first come first among equals."""

    slots: int
    per_person: int
    queue: int
    running: Counter[str] = field(default_factory=Counter)
    _waiting: list[Ticket] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _took_s: deque[float] = field(default_factory=lambda: deque(maxlen=32))

    def waiting(self, person: str = "") -> int:
        return sum(1 for w in self._waiting if not person or w.person == person)

    def refuses(self, person: str) -> bool:
        """Whether ``person`` already has a full queue here: their question is ``busy``."""
        return self.waiting(person) >= self.queue

    def retry_after_s(self, person: str) -> float:
        """About how long until ``person`` may ask again: the sessions waiting before
        one more of theirs, in rounds of the slots they may use, at the recent
        median session time (30 s before any finished)."""
        took = statistics.median(self._took_s) if self._took_s else 30.0
        rounds = math.ceil((self.waiting(person) + 1) / max(1, min(self.slots, self.per_person)))
        return round(took * rounds, 1)

    def enter(self, person: str) -> Ticket:
        """A session of ``person`` gets in line (and its slot at once, if one is free).
        Synchronous, so that what ``refuses`` counts is exact when a question is taken."""
        ticket = Ticket(next(self._order), person, asyncio.get_running_loop().create_future())
        self._waiting.append(ticket)
        self._dispatch()
        return ticket

    @asynccontextmanager
    async def turn(
        self, ticket: Ticket, queued: Callable[[int], Awaitable[None]]
    ) -> AsyncIterator[None]:
        """Wait for the ticket's slot (``queued(ahead)`` is told how many are ahead when
        it must wait) and hold it; the slot is given up however this ends."""
        try:
            if not ticket.running:
                await queued(self._fair_order().index(ticket))
            await ticket.turn
            began = asyncio.get_running_loop().time()
            yield
            self._took_s.append(asyncio.get_running_loop().time() - began)
        finally:
            self.leave(ticket)

    def leave(self, ticket: Ticket) -> None:
        """The session ended (or was stopped while it waited): its place or slot is free."""
        if ticket.left:
            return
        ticket.left = True
        if ticket in self._waiting:
            self._waiting.remove(ticket)
        elif ticket.running:
            self.running[ticket.person] -= 1
            self._dispatch()

    def _fair_order(self) -> list[Ticket]:
        return sorted(self._waiting, key=lambda w: (self.running[w.person], w.order))

    def _dispatch(self) -> None:
        """Start waiting sessions while there are free slots, fairest first."""
        while sum(self.running.values()) < self.slots:
            ready = [w for w in self._fair_order() if self.running[w.person] < self.per_person]
            if not ready:
                return
            chosen = ready[0]
            self._waiting.remove(chosen)
            if chosen.turn.cancelled():  # its session is being stopped: it leaves the line
                chosen.left = True
                continue
            self.running[chosen.person] += 1
            chosen.running = True
            chosen.turn.set_result(None)
