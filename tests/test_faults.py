"""Load and faults on a real nats-server with the scripted runtime."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client
from test_bus import council

from council.bus.ask import follow, submit
from council.bus.errors import QuestionRejected
from council.bus.messages import Accepted, FinalAnswer, Question
from council.bus.server import EmbeddedNats
from council.chairman.conductor import CouncilConfig


async def test_burst_of_200_questions_is_accepted_or_busy_and_all_accepted_finish(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """200 questions at once: each gets Accepted or Rejected(busy); every accepted one
    finishes; afterwards no session, task or in-flight call is left behind."""
    async with council(nats_server, CouncilConfig(), max_sessions=32) as c:
        c.runtime.delay_s = 0.01

        async def ask(i: int) -> Accepted | QuestionRejected:
            try:
                return await submit(nc, Question(question=f"burst {i}"), timeout_s=30)
            except QuestionRejected as exc:
                return exc

        replies = await asyncio.gather(*(ask(i) for i in range(200)))
        accepted = [r for r in replies if isinstance(r, Accepted)]
        rejected = [r for r in replies if isinstance(r, QuestionRejected)]
        assert len(accepted) + len(rejected) == 200
        assert accepted
        assert {r.reason for r in rejected} <= {"busy"}

        async def outcome(a: Accepted) -> object:
            events = [e async for e in follow(nc, a.session_id, timeout_s=120)]
            return events[-1]

        finals = await asyncio.gather(*(outcome(a) for a in accepted))
        assert all(isinstance(f, FinalAnswer) for f in finals)
        for _ in range(50):
            if not c.chairman.sessions and not c.agents.in_flight:
                break
            await asyncio.sleep(0.1)
        assert c.chairman.sessions == {}
        assert c.agents.in_flight == 0
        assert len(c.runtime.history) == len(accepted) * 10
        print(f"burst: {len(accepted)} accepted, {len(rejected)} busy")
