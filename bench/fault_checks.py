"""What the fault campaign checks once its faults are over: every session it
started ended, each with its events stored whole and in order (no gap, no
repeat, one terminal event)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client

from council.bus import subjects
from council.bus.errors import CouncilError
from council.bus.events import (
    TERMINAL_EVENTS,
    FinalAnswer,
    MemberFailed,
    SessionEvent,
    SessionFailed,
    SessionStarted,
    event_kind,
)
from council.bus.transport.stream import stored_events


async def ended(nc: Client, session_id: str, timeout_s: float) -> list[SessionEvent]:
    """The session's events once it has ended, or as far as it got in ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    events: list[SessionEvent] = []
    while time.monotonic() < deadline:
        try:
            events = await stored_events(nc, session_id)
        except (CouncilError, nats.errors.Error):  # failing over: read again
            pass
        if events and isinstance(events[-1], TERMINAL_EVENTS):
            break
        await asyncio.sleep(0.5)
    return events


async def every_session(nc: Client) -> list[str]:
    info = await nc.jetstream().stream_info(
        subjects.STREAM, subjects_filter=subjects.session_event("*.*", event_kind(SessionStarted))
    )
    return sorted(subjects.session_of(subject) for subject in info.state.subjects or {})


@dataclass
class Verdict:
    sessions: int = 0
    answered: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)
    """Sessions with a seq gap, a duplicate step, or more than one end, and which."""
    seconds: list[float] = field(default_factory=list)
    failed_members: Counter[str] = field(default_factory=Counter)
    """In the failed sessions: why their members failed (stage: reason)."""


def flaw_of(seqs: list[int], ends: int) -> str:
    """What breaks a session's record ("" when nothing does): its steps must be stored
    once each, in order, with one end."""
    if ends > 1:
        return f"{ends} ends"
    if len(set(seqs)) < len(seqs):
        return "a step stored twice"
    if missing := sorted(set(range(1, max(seqs) + 1)) - set(seqs)):
        return f"steps {missing} missing of {max(seqs)}"
    if seqs != sorted(seqs):
        return f"stored out of order: {seqs}"
    return ""


async def verify(nc: Client, wait_s: float, skip: set[str]) -> Verdict:
    verdict = Verdict()
    for session_id in await every_session(nc):
        if session_id in skip:
            continue
        events = await ended(nc, session_id, wait_s)
        verdict.sessions += 1
        ends = [e for e in events if isinstance(e, TERMINAL_EVENTS)]
        if not ends:
            verdict.lost.append(session_id)
            continue
        if flaw := flaw_of([e.seq for e in events], len(ends)):
            verdict.broken[session_id] = flaw
        if isinstance(ends[0], FinalAnswer):
            verdict.answered += 1
        elif isinstance(ends[0], SessionFailed):
            verdict.failed[ends[0].reason] += 1
            verdict.failed_members.update(
                f"{e.stage}: {e.reason}" for e in events if isinstance(e, MemberFailed)
            )
        verdict.seconds.append(ends[0].ts - events[0].ts)
    return verdict
