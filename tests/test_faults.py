"""Load and faults on a real nats-server with the scripted runtime."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats.js.errors
import psutil
import pytest
import structlog
from nats.aio.client import Client
from nats.js.api import PubAck
from test_bus import council

from council.agents.runtimes.scripted import HANG
from council.bus import subjects
from council.bus.client.ask import follow, submit
from council.bus.codec import (
    decode_agent_response,
    decode_ask_reply,
    decode_document_reply,
    encode,
)
from council.bus.errors import QuestionRejected, SessionTimeout
from council.bus.events import (
    FinalAnswer,
    SessionFailed,
    SessionPlan,
    SessionStarted,
    StageStarted,
    event_kind,
)
from council.bus.messages import Accepted, AgentError, Question, Rejected
from council.bus.transport.connection import connect, request
from council.bus.transport.eventlog import _InFlight
from council.bus.transport.server import EmbeddedNats
from council.bus.transport.stream import ensure_stream, stored_events
from council.chairman.admission import Defaults
from council.chairman.config import CouncilConfig
from council.chairman.service import ChairmanService


async def test_burst_of_200_questions_is_accepted_or_busy_and_all_accepted_finish(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """200 questions at once, three times: each gets Accepted or Rejected(busy); every
    accepted one finishes; afterwards no session, task or in-flight call is left behind,
    and the process's memory after the third burst is back at the first one's."""
    async with council(nats_server, CouncilConfig(), max_sessions=32) as c:
        c.runtime.delay_s = 0.01
        rss_mb = []
        for round_ in range(3):
            calls_before = len(c.runtime.history)
            accepted, busy = await burst(nc, 200, f"burst {round_}")
            for _ in range(50):
                if not c.chairman.sessions and not c.agents.in_flight:
                    break
                await asyncio.sleep(0.1)
            assert c.chairman.sessions == {}
            assert c.agents.in_flight == 0
            assert len(c.runtime.history) - calls_before == accepted * 10
            gc.collect()
            rss_mb.append(psutil.Process().memory_info().rss / 2**20)
            print(f"burst {round_}: {accepted} accepted, {busy} busy, RSS {rss_mb[-1]:.1f} MB")
        assert rss_mb[2] <= rss_mb[0] + 10, rss_mb


async def burst(nc: Client, count: int, prefix: str) -> tuple[int, int]:
    """Ask ``count`` questions at once; every reply is Accepted or Rejected(busy), and
    every accepted session ends with a FinalAnswer. Returns (accepted, busy)."""

    async def ask(i: int) -> Accepted | QuestionRejected:
        try:
            return await submit(nc, Question(question=f"{prefix} {i}"), timeout_s=30)
        except QuestionRejected as exc:
            return exc

    replies = await asyncio.gather(*(ask(i) for i in range(count)))
    accepted = [r for r in replies if isinstance(r, Accepted)]
    rejected = [r for r in replies if isinstance(r, QuestionRejected)]
    assert len(accepted) + len(rejected) == count
    assert accepted
    assert {r.reason for r in rejected} <= {"busy"}

    async def outcome(a: Accepted) -> object:
        events = [e async for e in follow(nc, a.session_id, timeout_s=120)]
        return events[-1]

    finals = await asyncio.gather(*(outcome(a) for a in accepted))
    assert all(isinstance(f, FinalAnswer) for f in finals)
    return len(accepted), len(rejected)


GARBAGE = {
    "random bytes": bytes(range(256)) * 4,
    "wrong schema": b'{"type": "review", "session_id": 5, "labels": "A"}',
    "huge": b'{"question": "' + b"x" * 900_000 + b'"',
}


@pytest.mark.parametrize("kind", GARBAGE)
async def test_garbage_on_every_request_subject_gets_a_reason_and_is_logged(
    nats_server: EmbeddedNats, nc: Client, kind: str
) -> None:
    """Each request subject answers garbage with a named rejection and logs it; then a
    session runs as if nothing happened."""
    payload = GARBAGE[kind]
    async with council(nats_server):
        with structlog.testing.capture_logs() as logs:
            asked = decode_ask_reply(
                (await request(nc, subjects.ask(subjects.ANYONE), payload, timeout_s=5)).data
            )
            assert isinstance(asked, Rejected)
            assert asked.reason == "bad_request"
            assert asked.detail
            for kind_ in subjects.AGENT_KINDS:
                subject = subjects.agent("m2", kind_)
                reply = decode_agent_response(
                    (await request(nc, subject, payload, timeout_s=5)).data
                )
                assert isinstance(reply, AgentError)
                assert reply.code == "bad_request"
                assert reply.detail
            parts = subjects.document(subjects.ANYONE)
            kept = decode_document_reply((await request(nc, parts, payload, timeout_s=5)).data)
            assert isinstance(kept, Rejected)
            assert kept.reason == "bad_request"
            for subject in ("council.health.x", "council.live.x.opinions.m1", subjects.ROSTER):
                await nc.publish(subject, payload)
            await nc.flush()
        events = [e["event"] for e in logs]
        assert events.count("bad_question") == 1
        assert events.count("bad_agent_request") == 3
        assert events.count("bad_document_part") == 1
        accepted = await submit(nc, Question(question="still serving?"))
        outcome = [e async for e in follow(nc, accepted.session_id, timeout_s=30)][-1]
        assert isinstance(outcome, FinalAnswer)


async def test_replayed_events_are_skipped_by_a_follower(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """Events stored a second time mid-session (a replay) never reach a reader twice; a
    session id nobody owns ends in a clear timeout."""
    async with council(nats_server, CouncilConfig(opinions_deadline_s=2.0)) as c:
        c.runtime.enqueue("m3", HANG)  # holds the session in stage 1 for 2 s
        accepted = await submit(nc, Question(question="q"))
        sid = accepted.session_id
        for _ in range(100):
            if len(early := await stored_events(nc, sid)) >= 2:
                break
            await asyncio.sleep(0.05)
        js = nc.jetstream()
        for event in early[:2]:  # no Nats-Msg-Id: the server stores them again
            await js.publish(subjects.session_event(sid, event_kind(event)), encode(event))
        with structlog.testing.capture_logs() as logs:
            events = [e async for e in follow(nc, sid, timeout_s=30)]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert isinstance(events[-1], FinalAnswer)
        assert [e["event"] for e in logs].count("replayed_session_event") == 2
        assert len(await stored_events(nc, sid)) == len(events) + 2
        with pytest.raises(SessionTimeout):
            [e async for e in follow(nc, "no-such-session", timeout_s=1)]


@asynccontextmanager
async def storing_chairman(
    tmp_path: Path, *, pipelined: bool = True
) -> AsyncIterator[tuple[EmbeddedNats, Client, ChairmanService]]:
    """A server, a chairman that stores events on it (patience 0.5 s), the stream made."""
    server = EmbeddedNats(tmp_path / "js").start()
    nc = await connect(server.url, name="chair")
    chairman = ChairmanService(
        nc, defaults=Defaults(("m1",), "m1"), config=CouncilConfig(), node="c",
        store_patience_s=0.5, pipelined=pipelined,
    )  # fmt: skip
    try:
        await ensure_stream(chairman.js)
        yield server, nc, chairman
    finally:
        await chairman.stop()
        await nc.close()
        server.stop()


def started_event(session_id: str) -> SessionStarted:
    plan = SessionPlan(
        session_id=session_id, question="q", members=["m1"], chairman="m1", mode="pairwise",
        seed=0,
    )  # fmt: skip
    return SessionStarted(session_id=session_id, plan=plan, quorum=1, owner="c", seq=1)


async def test_an_event_stored_after_a_long_outage_is_unconfirmed_then_stored_never_lost(
    tmp_path: Path,
) -> None:
    """The server is down for longer than the chairman's patience: the event is
    reported unconfirmed (a warning, not `event_lost`), and once the server is back
    it is confirmed stored, exactly once."""
    async with storing_chairman(tmp_path, pipelined=False) as (server, nc, chairman):
        event = started_event("t.s1")
        with structlog.testing.capture_logs() as logs:
            server.stop()
            await chairman._store(event)
            server.start()
            for _ in range(100):
                if any(e["event"] == "event_stored_late" for e in logs):
                    break
                await asyncio.sleep(0.1)
        events = await stored_events(nc, "t.s1")
    names = [e["event"] for e in logs]
    assert "event_unconfirmed" in names
    assert "event_stored_late" in names
    assert "event_lost" not in names
    assert events == [event]


async def test_pipelined_events_lost_in_an_outage_are_published_again_before_the_end(
    tmp_path: Path,
) -> None:
    """Events sent without waiting for their acks while the server is down: the
    terminal event waits for them, publishes again the ones not acked, and the stream
    ends with every event once, in seq order."""
    started = started_event("t.s2")
    stage = StageStarted(session_id="t.s2", seq=2, stage="opinions", expected=1)
    end = SessionFailed(session_id="t.s2", seq=3, reason="quorum_not_met", detail="test")
    async with storing_chairman(tmp_path) as (server, nc, chairman):
        await chairman._store(started)  # sent while the server is up
        server.stop()
        await chairman._store(stage)  # sent (buffered) while it is down
        restart = asyncio.get_running_loop().call_later(1.0, server.start)
        with structlog.testing.capture_logs() as logs:
            await chairman._store(end)  # waits for both acks, republishes what was lost
        restart.cancel()
        events = await stored_events(nc, "t.s2")
    assert "event_unacked" in [e["event"] for e in logs]  # the republishing path ran
    assert events == [started, stage, end]


@pytest.mark.parametrize("trouble", ["refused by the stream", "in flight across a reconnect"])
async def test_a_pipelined_event_in_trouble_is_stored_again_before_the_next_one_is_sent(
    tmp_path: Path, trouble: str
) -> None:
    """An event the stream refused (a cluster electing a leader), or one in flight
    when the connection broke (lost with the dead socket), must not be overtaken: the
    next event waits until it is stored, so the stream never holds a later step
    without an earlier one (a chairman taking the session over could not fold it)."""
    started = started_event("t.s3")
    lost = StageStarted(session_id="t.s3", seq=2, stage="opinions", expected=1)
    after = StageStarted(session_id="t.s3", seq=3, stage="reviews", expected=1)
    ack: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
    async with storing_chairman(tmp_path) as (_, nc, chairman):
        reconnects = int(nc.stats["reconnects"])
        if trouble == "refused by the stream":
            ack.set_exception(nats.js.errors.ServiceUnavailableError())
        else:  # sent before the last reconnect, never acked
            reconnects -= 1
        await chairman._store(started)
        chairman.events._unacked["t.s3"].append(_InFlight(lost, ack, reconnects))  # never stored
        with structlog.testing.capture_logs() as logs:
            await chairman._store(after)
        events = await stored_events(nc, "t.s3")
    assert "event_unacked" in [e["event"] for e in logs]
    assert events == [started, lost, after]
