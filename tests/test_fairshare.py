"""A fair share of a chairman's slots among people: a flood waits its turn."""

from __future__ import annotations

import asyncio

from test_bus import council

from council.agents.runtimes.scripted import HANG
from council.bus import subjects
from council.bus.client.ask import follow, stop, submit
from council.bus.codec import decode_ask_reply, encode
from council.bus.events import FinalAnswer, SessionQueued, StageStarted
from council.bus.messages import Accepted, Question, Rejected
from council.bus.transport.connection import Credentials, connect, request
from council.bus.transport.server import EmbeddedNats
from council.bus.transport.stream import stored_events
from council.chairman.fairshare import FairShare


async def test_a_freed_slot_goes_to_the_person_with_fewest_running() -> None:
    """One person holds both slots and has two more waiting; another person's one
    question, asked after them, takes the next slot; the person limit holds."""
    share = FairShare(slots=2, per_person=2, queue=8)
    started: list[str] = []
    places: dict[str, int] = {}
    release = {name: asyncio.Event() for name in ("h1", "h2", "h3", "h4", "l1")}

    async def session(name: str, person: str) -> None:
        async def queued(ahead: int) -> None:
            places[name] = ahead

        async with share.turn(tickets[name], queued):
            started.append(name)
            await release[name].wait()

    tickets = {f"h{i}": share.enter("heavy") for i in range(1, 5)}  # in the order asked
    tickets["l1"] = share.enter("light")
    tasks = [asyncio.create_task(session(name, t.person)) for name, t in tickets.items()]
    await asyncio.sleep(0.01)
    assert started == ["h1", "h2"]
    assert places == {"h3": 1, "h4": 2, "l1": 0}  # light is first in line, ahead of h3
    assert share.waiting("heavy") == 2
    release["h1"].set()
    await asyncio.sleep(0.01)
    assert started == ["h1", "h2", "l1"]
    for name in ("h2", "l1", "h3", "h4"):
        release[name].set()
    await asyncio.gather(*tasks)
    assert started == ["h1", "h2", "l1", "h3", "h4"]
    assert sum(share.running.values()) == 0


async def test_a_person_at_their_limit_waits_while_slots_are_free_and_a_full_queue_refuses() -> (
    None
):
    share = FairShare(slots=4, per_person=1, queue=1)
    hold = asyncio.Event()

    async def session(person: str) -> None:
        async with share.turn(share.enter(person), lambda ahead: asyncio.sleep(0)):
            await hold.wait()

    first = asyncio.create_task(session("a"))
    second = asyncio.create_task(session("a"))
    await asyncio.sleep(0.01)
    assert share.running["a"] == 1
    assert share.waiting("a") == 1
    assert share.refuses("a")
    assert not share.refuses("b")
    assert share.retry_after_s("a") > 0
    second.cancel()  # stopped while it waited: it leaves the line, never runs
    await asyncio.sleep(0.01)
    assert share.waiting() == 0
    hold.set()
    await first
    assert sum(share.running.values()) == 0


async def test_one_persons_flood_of_100_does_not_delay_anothers_question(
    nats_server: EmbeddedNats,
) -> None:
    """On a real server with the scripted runtime: heavy asks 100 questions at once,
    more than the chairman's slots and heavy's queue; light asks one after them. Each
    of heavy's is accepted (queued) or busy with how long to wait; light's is
    accepted, first in line, and no session of heavy's starts before it."""
    heavy = await connect(nats_server.url, name="heavy", credentials=Credentials("heavy", "x"))
    light = await connect(nats_server.url, name="light", credentials=Credentials("light", "x"))
    try:
        async with council(nats_server, max_sessions=4, person_sessions=4, queue=20) as c:
            c.runtime.delay_s = 0.05
            for model in ("m1", "m2", "m3"):  # heavy's first four hold the slots a while
                for _ in range(4):
                    c.runtime.enqueue(model, HANG)
            payload = encode(Question(question="flood"))
            replies = await asyncio.gather(
                *(request(heavy, subjects.ask("heavy"), payload, timeout_s=10) for _ in range(100))
            )
            flood = [decode_ask_reply(r.data) for r in replies]
            accepted = [r for r in flood if isinstance(r, Accepted)]
            busy = [r for r in flood if isinstance(r, Rejected)]
            mine = await submit(light, Question(question="mine"))
            await asyncio.sleep(0.2)
            hung = [a.session_id for a in accepted[:4]]
            await asyncio.gather(*(stop(heavy, sid) for sid in hung))  # frees the slots
            events = [e async for e in follow(light, mine.session_id, timeout_s=60)]
            began = [e for e in events if isinstance(e, StageStarted)][0]
            started_before = 0
            for a in accepted[4:]:
                theirs = await stored_events(heavy, a.session_id, wait_s=0.5)
                stages = [e for e in theirs if isinstance(e, StageStarted)]
                if stages and stages[0].ts < began.ts:
                    started_before += 1
    finally:
        await heavy.close()
        await light.close()
    assert len(accepted) == 4 + 20  # the slots, then heavy's queue
    assert len(busy) == 76
    assert {r.reason for r in busy} == {"busy"}
    assert all(r.retry_after_s > 0 for r in busy)
    assert all(subjects.owner_of(a.session_id) == "heavy" for a in accepted)
    queued = [e for e in events if isinstance(e, SessionQueued)]
    assert [q.ahead for q in queued] == [0]
    assert isinstance(events[-1], FinalAnswer)
    assert started_before == 0
