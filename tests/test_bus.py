"""Agents and chairman on a real nats-server, scripted runtime: the wiring and bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from helpers import serving, settled_agents
from nats.aio.client import Client
from nats.aio.msg import Msg

from council.agents.runtimes.router import RoutedRuntime
from council.agents.runtimes.scripted import HANG, ScriptedRuntime
from council.agents.service import AgentService
from council.assembly import wiring
from council.assembly.wiring import local_council
from council.bus import subjects
from council.bus.client.ask import follow, forget, presets, roster, stop, submit
from council.bus.codec import (
    decode_agent_response,
    decode_ask_reply,
    decode_delta,
    decode_event,
    decode_health,
    encode,
)
from council.bus.errors import NoCouncil, QuestionRejected, SessionNotRunning
from council.bus.events import (
    FinalAnswer,
    MemberFailed,
    SessionCancelled,
    SessionEvent,
    SessionFailed,
    SessionQueued,
    SessionStarted,
    StageStarted,
)
from council.bus.messages import (
    MAX_DOCUMENT_CHARS,
    AgentError,
    Document,
    OpinionRequest,
    Question,
    Rejected,
    TokenDelta,
)
from council.bus.session import SessionState, State
from council.bus.transport.connection import connect, request
from council.bus.transport.server import EmbeddedNats, NatsServerError
from council.bus.transport.stream import conversation, stored_events
from council.chairman.admission import Defaults
from council.chairman.config import CouncilConfig
from council.chairman.gateway import BusAgents
from council.chairman.prompts import estimated_tokens
from council.chairman.service import ChairmanService

MODELS = ["m1", "m2", "m3"]


@dataclass
class Council:
    url: str
    runtime: ScriptedRuntime
    agents: AgentService
    chairman: ChairmanService


async def start_agents(url: str, runtime: ScriptedRuntime, node: str) -> AgentService:
    nc = await connect(url, name=node)
    routed = RoutedRuntime.serving(runtime, runtime.models)
    return await wiring.start_agents(nc, routed, node=node, heartbeat_s=0.2)


@asynccontextmanager
async def council(
    server: EmbeddedNats,
    config: CouncilConfig | None = None,
    max_sessions: int = 16,
    strategy: str = "synthesize",
    presets: str = "",
    pace_s: float = 0.0,
    **chairman_options: Any,
) -> AsyncIterator[Council]:
    runtime = ScriptedRuntime(MODELS, pace_s=pace_s)
    # a scripted queue holds only what a test put in it: no concluding turn draws from it
    config = dataclasses.replace(config or CouncilConfig(), conclude=False)
    agents_nc = await connect(server.url, name="agents")
    chairman_nc = await connect(server.url, name="chairman")
    try:
        async with local_council(
            agents_nc, chairman_nc, RoutedRuntime.serving(runtime, MODELS),
            Defaults(tuple(MODELS), "m1", strategy=strategy, presets=presets), config,
            heartbeat_s=0.2,
            max_sessions=max_sessions, **chairman_options,
        ) as started:  # fmt: skip
            yield Council(server.url, runtime, started.agents, started.chairman)
    finally:
        await chairman_nc.close()
        await agents_nc.close()


async def ask(nc: Client, question: Question) -> list[SessionEvent]:
    accepted = await submit(nc, question)
    return [e async for e in follow(nc, accepted.session_id, timeout_s=30)]


async def test_question_over_the_bus_yields_every_event_in_seq_order(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A session asked on council.ask runs all stages; the stream replays it in order."""
    async with council(nats_server):
        deltas: list[TokenDelta] = []

        async def on_live(msg: Msg) -> None:  # from before the session starts: all of them
            deltas.append(decode_delta(msg.data))

        live = await nc.subscribe(subjects.LIVE, cb=on_live)
        accepted = await submit(nc, Question(question="What is 2+2?"))
        followed: list[TokenDelta] = []
        events = [
            e async for e in follow(nc, accepted.session_id, timeout_s=30, on_delta=followed.append)
        ]
        await live.unsubscribe()
    assert "synthesis" in {d.stage for d in followed}  # follow's own, from its start on
    final = events[-1]
    assert isinstance(final, FinalAnswer)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len(final.opinions) == 3
    assert len(final.reviews) == 6
    assert final.answer
    # a late joiner replays the same history from the stream
    replay = [e async for e in follow(nc, accepted.session_id, timeout_s=10)]
    assert replay == events
    assert {d.stage for d in deltas} >= {"opinions", "synthesis"}
    assert any(d.done for d in deltas)


async def test_nobody_listening_raises_no_council(nc: Client) -> None:
    """With no chairman on the bus, asking fails fast with NoCouncil."""
    with pytest.raises(NoCouncil):
        await submit(nc, Question(question="anyone?"), timeout_s=1)


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"\x00\xff\xfe", b'{"question": 42}', b'{"question": "q", "mode": "vote"}',
     b'{"question": "q", "extra": 1}', b"[]"],
)  # fmt: skip
async def test_malformed_question_gets_bad_request_and_chairman_keeps_serving(
    nats_server: EmbeddedNats, nc: Client, payload: bytes
) -> None:
    """Garbage on council.ask is answered with Rejected(bad_request); the next ask works."""
    async with council(nats_server):
        msg = await request(nc, subjects.ask(subjects.ANYONE), payload, timeout_s=5)
        reply = decode_ask_reply(msg.data)
        assert isinstance(reply, Rejected)
        assert reply.reason == "bad_request"
        assert reply.detail
        events = await ask(nc, Question(question="still there?"))
        assert isinstance(events[-1], FinalAnswer)


async def test_unknown_model_and_empty_question_are_rejected_over_the_bus(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """Rejections reach the client as QuestionRejected with the reason."""
    async with council(nats_server):
        with pytest.raises(QuestionRejected) as unknown:
            await submit(nc, Question(question="q", members=["m1", "llama-9000"]))
        assert unknown.value.reason == "unknown_model"
        with pytest.raises(QuestionRejected) as empty:
            await submit(nc, Question(question=" "))
        assert empty.value.reason == "empty_question"


async def test_malformed_agent_request_gets_bad_request_and_agent_keeps_serving(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """Garbage or a wrong model on an agent subject gets AgentError(bad_request)."""
    async with council(nats_server):
        subject = subjects.agent("m2", "opinion")
        for payload in (b"garbage", b'{"type": "opinion"}'):
            reply = decode_agent_response((await request(nc, subject, payload, timeout_s=5)).data)
            assert isinstance(reply, AgentError)
            assert reply.code == "bad_request"
        wrong = OpinionRequest(session_id="x", member="m1", model="m1", messages=[])
        reply = decode_agent_response((await request(nc, subject, encode(wrong), timeout_s=5)).data)
        assert isinstance(reply, AgentError)
        assert "m1" in reply.detail
        events = await ask(nc, Question(question="still there?"))
        assert isinstance(events[-1], FinalAnswer)


async def test_garbage_heartbeats_and_events_do_not_disturb_a_session(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """Random bytes on health, live and session subjects are ignored; sessions finish."""
    async with council(nats_server):
        for subject in (
            "council.health.evil",
            "council.live.x.opinions.m1",
            "council.agents.roster",
        ):
            await nc.publish(subject, b"\x00garbage")
        await nc.flush()
        events = await ask(nc, Question(question="q"))
        assert isinstance(events[-1], FinalAnswer)


async def test_agent_timeout_over_the_bus_is_a_named_member_failure(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A model that never answers becomes MemberFailed(timeout); the session finishes."""
    async with council(nats_server, CouncilConfig(opinions_deadline_s=1.0)) as c:
        c.runtime.enqueue("m3", HANG)
        events = await ask(nc, Question(question="q"))
    failed = [e for e in events if isinstance(e, MemberFailed)]
    assert [(f.member, f.reason) for f in failed] == [("m3", "timeout")]
    assert isinstance(events[-1], FinalAnswer)


async def test_a_call_the_chairman_stops_waiting_for_stops_at_its_agent(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """Past the deadline, and once a majority of all the members agrees, the calls
    still out are cancelled over council.cancel: their agent frees the slot."""
    async with council(nats_server, CouncilConfig(opinions_deadline_s=1.0)) as c:
        c.runtime.enqueue("m3", HANG)
        events = await ask(nc, Question(question="q"))
        assert isinstance(events[-1], FinalAnswer)
        await settled_agents(c.agents)

    async with council(nats_server, strategy="majority-then-synthesize") as c:
        c.runtime.enqueue("m1", "It is 4.")
        c.runtime.enqueue("m2", "2 + 2 = 4")
        c.runtime.enqueue("m3", HANG)
        events = await ask(nc, Question(question="q"))
        final = events[-1]
        assert isinstance(final, FinalAnswer)
        assert final.reviews_skipped
        failed = [e for e in events if isinstance(e, MemberFailed)]
        assert [(f.member, f.reason) for f in failed] == [("m3", "not_needed")]
        (reviews,) = [e for e in events if isinstance(e, StageStarted) and e.stage == "reviews"]
        assert reviews.reason == "2 of 3 members answered 4"
        await settled_agents(c.agents)


async def test_a_client_stops_a_running_session_and_its_agents_stop_its_calls(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """council.stop: the chairman running the session ends it with session_cancelled
    and answers where it was; the agents stop its calls; a session no chairman runs
    (finished, or unknown) is named as such; a malformed stop request is ignored and
    the council goes on."""
    async with council(nats_server) as c:
        for model in MODELS:
            c.runtime.enqueue(model, HANG)
        accepted = await submit(nc, Question(question="q"))
        await serving(c.agents, len(MODELS))
        await nc.publish(subjects.stop(subjects.ANYONE), b"\x00garbage")
        stopped = await stop(nc, accepted.session_id, reason="changed my mind")
        assert (stopped.session_id, stopped.stage) == (accepted.session_id, "opinions")
        events = [e async for e in follow(nc, accepted.session_id, timeout_s=10)]
        ended = events[-1]
        assert isinstance(ended, SessionCancelled)
        assert (ended.reason, ended.stage) == ("cancelled", "opinions")
        assert "changed my mind" in ended.detail
        assert SessionState.rebuild(accepted.session_id, events).state is State.CANCELLED
        await settled_agents(c.agents)
        with pytest.raises(SessionNotRunning):
            await stop(nc, accepted.session_id, timeout_s=0.5)
        with pytest.raises(SessionNotRunning):
            await stop(nc, "no-such-session", timeout_s=0.5)
        events = await ask(nc, Question(question="and now?"))
        assert isinstance(events[-1], FinalAnswer)


async def test_a_follow_up_sees_its_conversation_and_another_chairman_rebuilds_it(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A question starts a conversation named by its session; a follow-up gets the
    earlier turns: members as chat, reviewers and the chairman's model as context.
    A new chairman reads the same thread from the stream; a small history budget
    leaves the oldest turn out and says so; an unknown or malformed conversation id
    is rejected, as is a follow-up of a question asked not to be remembered."""
    first_q, second_q = "What is the capital of France?", "And its population?"
    async with council(nats_server) as c:
        first = await ask(nc, Question(question=first_q))
        opened = first[0]
        assert isinstance(opened, SessionStarted)
        assert opened.plan.conversation == opened.session_id
        assert not opened.plan.history
        first_answer = first[-1]
        assert isinstance(first_answer, FinalAnswer)
        follow_up = await ask(nc, Question(question=second_q, conversation=opened.session_id))
        started = follow_up[0]
        assert isinstance(started, SessionStarted)
        assert started.plan.conversation == opened.session_id
        turns = [(t.question, t.answer) for t in started.plan.history]
        assert turns == [(first_q, first_answer.answer)]
        calls = [call for call in c.runtime.history if second_q in call.messages[-1].content]
        opinions = [call for call in calls if call.schema is None and len(call.messages) == 4]
        assert len(opinions) == len(MODELS)
        for call in opinions:
            assert [(m.role, m.content) for m in call.messages[1:]] == [
                ("user", first_q), ("assistant", first_answer.answer), ("user", second_q)
            ]  # fmt: skip
        reviews = [call for call in calls if call.schema is not None]
        assert reviews
        assert all("Conversation so far" in call.messages[-1].content for call in reviews)

    second_answer = follow_up[-1]
    assert isinstance(second_answer, FinalAnswer)
    one_turn = estimated_tokens(second_q) + estimated_tokens(second_answer.answer)
    async with council(nats_server, CouncilConfig(history_tokens=one_turn)):
        third = await ask(nc, Question(question="Its river?", conversation=opened.session_id))
        started = third[0]
        assert isinstance(started, SessionStarted)
        assert [t.question for t in started.plan.history] == [second_q]
        assert started.plan.history_dropped == [opened.session_id]
        assert [t.session_id for t in await conversation(nc, opened.session_id)] == [
            opened.session_id, follow_up[0].session_id, third[0].session_id
        ]  # fmt: skip
        with pytest.raises(QuestionRejected) as unknown:
            await submit(nc, Question(question="q", conversation="anyone.nosuchthread"))
        assert unknown.value.reason == "unknown_conversation"
        measured = await ask(nc, Question(question="Not a conversation", remember=False))
        assert isinstance(measured[-1], FinalAnswer)
        assert not await conversation(nc, measured[0].session_id)
        with pytest.raises(QuestionRejected) as forgotten:
            await submit(nc, Question(question="q", conversation=measured[0].session_id))
        assert forgotten.value.reason == "unknown_conversation"
        reply = decode_ask_reply(
            (
                await request(
                    nc,
                    subjects.ask(subjects.ANYONE),
                    b'{"question": "q", "conversation": "a.b.c"}',
                    timeout_s=5,
                )
            ).data
        )
        assert isinstance(reply, Rejected)
        assert reply.reason == "bad_request"


async def test_a_document_reaches_every_stage_and_a_follow_up_on_another_chairman(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A file's text is in every stage's prompt (members, reviewers, the chairman's
    model); its turn keeps it, so a follow-up asked of a new chairman sees it too.
    A file past the document budget is cut at its end and says so; an older turn's
    file that no longer fits is left out by name; too much text inline is refused
    (`submit` sends a large file through the object store instead)."""
    contract = Document(name="contract.md", text="The lease ends on 31 March 2027.")
    async with council(nats_server) as c:
        first = await ask(nc, Question(question="When does it end?", documents=[contract]))
        started = first[0]
        assert isinstance(started, SessionStarted)
        assert started.plan.documents == [contract]
        assert isinstance(first[-1], FinalAnswer)
        prompts_seen = [call.messages[-1].content for call in c.runtime.history]
        assert len(prompts_seen) == 3 + 6 + 1  # opinions, reviews, synthesis
        assert all('<document name="contract.md">' in p for p in prompts_seen)
        assert all("31 March 2027" in p for p in prompts_seen)
    (turn,) = await conversation(nc, started.session_id)
    assert turn.documents == [contract]

    async with council(nats_server, CouncilConfig(document_tokens=12)) as c:
        follow_up = await ask(
            nc, Question(question="And the deposit?", conversation=started.session_id)
        )
        plan = follow_up[0].plan  # type: ignore[union-attr]
        assert plan.conversation_documents == [contract]
        assert all("31 March 2027" in call.messages[-1].content for call in c.runtime.history)
        long = Document(name="annex.txt", text="x" * 100)
        third = await ask(
            nc,
            Question(question="And the annex?", conversation=started.session_id, documents=[long]),
        )
        plan = third[0].plan  # type: ignore[union-attr]
        assert (plan.documents[0].cut, len(plan.documents[0].text)) == (52, 48)
        assert plan.documents_dropped == ["contract.md"]
        last_prompt = c.runtime.history[-1].messages[-1].content
        assert "52 more characters of annex.txt were cut" in last_prompt
        too_much = Document(name="big.txt", text="y" * (MAX_DOCUMENT_CHARS + 1))
        inline = encode(Question(question="Summarize", documents=[too_much]))  # not as submit
        reply = await request(nc, subjects.ask(subjects.ANYONE), inline, timeout_s=5)
        refused = decode_ask_reply(reply.data)
        assert isinstance(refused, Rejected)
        assert refused.reason == "documents_too_long"


async def test_a_conversation_whose_first_question_failed_can_be_deleted(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A failed question leaves a session and no turn: deleting its conversation found
    nothing to delete, and the failed question stayed in the Chat page's list. So
    does a failed follow-up, whose session no turn names."""
    async with council(nats_server) as c:
        for model in MODELS:
            c.runtime.enqueue(model, *[RuntimeError("model crashed")] * 3)
        accepted = await submit(nc, Question(question="Will it fail?"))
        events = [e async for e in follow(nc, accepted.session_id, timeout_s=30)]
        assert isinstance(events[-1], SessionFailed)
        forgotten = await forget(nc, accepted.conversation)
    assert forgotten.sessions == [accepted.session_id]
    assert await stored_events(nc, accepted.session_id, wait_s=0.5) == []

    async with council(nats_server) as c:
        first = await submit(nc, Question(question="Will it work?"))
        ended = [e async for e in follow(nc, first.session_id, timeout_s=30)][-1]
        assert isinstance(ended, FinalAnswer)
        for model in MODELS:
            c.runtime.enqueue(model, *[RuntimeError("model crashed")] * 3)
        later = await submit(nc, Question(question="And then?", conversation=first.conversation))
        ended = [e async for e in follow(nc, later.session_id, timeout_s=30)][-1]
        assert isinstance(ended, SessionFailed)
        forgotten = await forget(nc, first.conversation)
    assert set(forgotten.sessions) == {first.session_id, later.session_id}
    assert await stored_events(nc, later.session_id, wait_s=0.5) == []


async def test_a_preset_names_a_council_and_its_conversation_records_it(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """The chairman lists its defaults, then its presets with what no agent serves (the
    agents asked again for a lacking model, not at every listing); a question naming
    one runs its members and strategy (its own members win), and its session and turn
    record it; an unknown preset is refused with the known ones."""
    table = (
        '{"pair": {"summary": "two", "members": ["m2", "m3"], "strategy": "vote"},'
        ' "far": {"members": ["m1", "m9"]}}'
    )
    async with council(nats_server, presets=table):
        listed = {p.name: p for p in await presets(nc)}
        assert next(iter(listed)) == "default"
        assert (listed["default"].members, listed["default"].strategy) == (MODELS, "synthesize")
        pair = listed["pair"]
        assert (pair.members, pair.chairman, pair.strategy, pair.missing) == (
            ["m2", "m3"], "m1", "vote", []
        )  # fmt: skip
        assert listed["far"].missing == ["m9"]
        assert {"fast", "deliberate", "methods", "mixed"} <= set(listed)
        rounds = await nc.subscribe(subjects.ROSTER)
        await presets(nc)  # m9 still lacking: the agents were asked a moment ago
        await nc.flush()
        assert rounds.pending_msgs == 0
        await rounds.unsubscribe()

        accepted = await submit(nc, Question(question="Which?", preset="pair"))
        assert (accepted.members, accepted.strategy, accepted.preset) == (
            ["m2", "m3"], "vote", "pair"
        )  # fmt: skip
        events = [e async for e in follow(nc, accepted.session_id, timeout_s=30)]
        assert isinstance(events[0], SessionStarted)
        assert events[0].plan.preset == "pair"
        assert isinstance(events[-1], FinalAnswer)
        (turn,) = await conversation(nc, accepted.conversation)
        assert turn.preset == "pair"

        own = await submit(nc, Question(question="Mine?", members=["m1", "m3"], preset="pair"))
        assert (own.members, own.strategy) == (["m1", "m3"], "vote")
        assert [e async for e in follow(nc, own.session_id, timeout_s=30)]
        with pytest.raises(QuestionRejected) as unknown:
            await submit(nc, Question(question="q", preset="nosuch"))
        assert unknown.value.reason == "unknown_preset"
        assert "default, fast" in str(unknown.value)


async def test_two_agents_serving_the_same_models_share_the_work(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A second agent process on the same models joins the queue group: both get calls."""
    async with council(nats_server) as c:
        second = ScriptedRuntime(MODELS)
        other = await start_agents(c.url, second, "agents-2")
        try:
            for _ in range(3):
                events = await ask(nc, Question(question=f"q {uuid.uuid4()}"))
                assert isinstance(events[-1], FinalAnswer)
        finally:
            await other.stop()
            await other.nc.close()
        assert c.runtime.history
        assert second.history
        assert len(c.runtime.history) + len(second.history) == 3 * 10


async def test_two_chairmen_share_the_questions_and_each_session_has_one_owner(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """Chairmen are a queue group on council.ask: each question is run by exactly one,
    named as the session's owner, and both get questions."""
    async with council(nats_server) as c:
        other_nc = await connect(c.url, name="chairman-2")
        other = await wiring.start_chairman(
            other_nc, Defaults(tuple(MODELS), "m1"), node="chairman-2", heartbeat_s=0.2
        )
        try:
            sessions = await asyncio.gather(
                *(ask(nc, Question(question=f"q {i}")) for i in range(16))
            )
        finally:
            await other.stop()
            await other_nc.close()
    owners = []
    for events in sessions:
        started = [e for e in events if isinstance(e, SessionStarted)]
        assert len(started) == 1
        assert isinstance(events[-1], FinalAnswer)
        assert len([e for e in events if isinstance(e, FinalAnswer)]) == 1
        owners.append(started[0].owner)
    assert set(owners) == {c.chairman.node, "chairman-2"}


async def test_beyond_the_slots_a_question_waits_and_beyond_the_queue_it_is_busy(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """Beyond max_sessions a question waits its turn (``session_queued``), and only one
    beyond the person's queue gets Rejected(busy) with how long to wait; the waiting
    one runs when the slot frees."""
    async with council(nats_server, max_sessions=1, queue=1) as c:
        for model in MODELS:
            c.runtime.enqueue(model, HANG)
        first = await submit(nc, Question(question="slow"))
        second = await submit(nc, Question(question="second"))
        with pytest.raises(QuestionRejected) as busy:
            await submit(nc, Question(question="third"))
        assert busy.value.reason == "busy"
        assert "try again in about" in busy.value.detail
        await stop(nc, first.session_id)
        events = [e async for e in follow(nc, second.session_id, timeout_s=30)]
    queued = [e for e in events if isinstance(e, SessionQueued)]
    assert [q.ahead for q in queued] == [0]
    assert isinstance(events[-1], FinalAnswer)
    assert events.index(queued[0]) == 1  # right after session_started, before any stage


async def test_agents_publish_health_heartbeats(nats_server: EmbeddedNats, nc: Client) -> None:
    """Heartbeats carry psutil figures and the served models with their kinds."""
    async with council(nats_server):
        sub = await nc.subscribe(subjects.health("agents"))
        msg = await sub.next_msg(timeout=5)
        health = decode_health(msg.data)
    assert health.role == "agents"
    assert health.pid > 0
    assert health.rss_mb > 0
    assert {m.name for m in health.models} == set(MODELS)
    assert all("opinion" in m.kinds for m in health.models)


async def test_stopping_the_chairman_ends_running_sessions_with_a_named_failure(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A session cut by a chairman shutdown ends with SessionFailed(chairman_stopped)."""
    async with council(nats_server) as c:
        for model in MODELS:
            c.runtime.enqueue(model, HANG)
        accepted = await submit(nc, Question(question="q"))
        await asyncio.sleep(0.2)
    events = [e async for e in follow(nc, accepted.session_id, timeout_s=10)]
    assert type(events[-1]).__name__ == "SessionFailed"
    assert events[-1].reason == "chairman_stopped"  # type: ignore[union-attr]
    raw = await nc.jetstream().get_last_msg(
        subjects.STREAM, subjects.session_events(accepted.session_id)
    )
    assert decode_event(raw.data) == events[-1]


async def test_garbage_in_a_session_stream_is_skipped_by_followers(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """Bytes, foreign events and wrong schemas stored under a session do not stop a reader."""
    async with council(nats_server) as c:
        for model in MODELS:
            c.runtime.enqueue(model, HANG)
        accepted = await submit(nc, Question(question="q"))
        sid = accepted.session_id
        js = nc.jetstream()
        await js.publish(subjects.session_event(sid, "junk"), b"\x00\x01")
        await js.publish(subjects.session_event(sid, "junk"), b'{"type": "opinion"}')
        foreign = SessionFailed(session_id="someone-else", seq=99, reason="forged")
        await js.publish(subjects.session_event(sid, "session_failed"), encode(foreign))
    events = [e async for e in follow(nc, sid, timeout_s=10)]
    assert all(e.session_id == sid for e in events)
    assert events[-1].reason == "chairman_stopped"  # type: ignore[union-attr]


async def test_question_over_the_servers_max_payload_is_rejected_client_side(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A payload bigger than NATS allows never leaves the client: QuestionRejected."""
    with pytest.raises(QuestionRejected) as rejected:
        await submit(nc, Question(question="x" * (nc.max_payload + 1)))
    assert rejected.value.reason == "question_too_long"


@pytest.mark.parametrize("listener", ["nobody", "a council.> subscriber"])
async def test_a_model_no_agent_serves_fails_fast_whatever_else_subscribes(
    nats_server: EmbeddedNats, nc: Client, listener: str
) -> None:
    """With nothing on the subject the server says "no responders"; a wildcard
    subscriber (`council trace`) hides that, and the first word that never comes
    tells instead: the member fails as no_responders, not after the agents'
    silence and two re-asks."""
    heard: list[str] = []

    async def trace(msg: Msg) -> None:
        heard.append(msg.subject)

    if listener != "nobody":
        tracer = await nc.subscribe(subjects.ALL, cb=trace)
        await nc.flush()
    agents = BusAgents(nc, first_word_s=0.5)
    await agents.start()
    try:
        request = OpinionRequest(
            session_id="s1", member="ghost", model="ghost", messages=[], timeout_s=60
        )
        reply = await agents.opinion(request)
    finally:
        await agents.stop()
        if listener != "nobody":
            await tracer.unsubscribe()
    assert isinstance(reply, AgentError)
    assert reply.code == "no_responders"
    assert heard == ([] if listener == "nobody" else [subjects.agent("ghost", "opinion")] * 2)


async def test_a_roster_with_no_agent_is_empty_and_quiet(nc: Client) -> None:
    """The server's "no responders" status is not a bad roster reply."""
    with structlog.testing.capture_logs() as logs:
        infos = await roster(nc, window_s=0.3)
    assert infos == []
    assert not [e for e in logs if e.get("event") == "bad_roster_reply"]


def test_the_session_id_of_a_subject_is_read_from_the_session_families_only() -> None:
    sid = subjects.owned("alice", "abc123")
    assert subjects.owner_of(sid) == "alice"
    assert subjects.session_of(subjects.session_event(sid, "opinion")) == sid
    assert subjects.session_of(subjects.live(sid, "opinions", "m@careful")) == sid
    assert subjects.session_of(subjects.cancel(sid)) == sid
    assert subjects.person_of(subjects.ask("alice")) == "alice"
    for other in (subjects.ASK, subjects.agent("m", "opinion"), "council.session", "x.session.a.b"):
        assert subjects.session_of(other) == ""
        assert subjects.person_of(other) == ""


@pytest.mark.parametrize("named_by", ["flag", "config"])
def test_a_second_server_on_one_jetstream_store_is_refused(tmp_path: Path, named_by: str) -> None:
    """Two `council up`s on different ports once shared a store (the same working
    directory's nats.conf): the second server corrupted the first one's stream and its
    chairman took over the first one's sessions. Now the second is refused, by name."""
    config = None
    if named_by == "config":
        config = tmp_path / "nats.conf"
        config.write_text(f'jetstream {{\n    store_dir: "{tmp_path / "shared"}"\n}}\n')
    first = EmbeddedNats(tmp_path / "shared", config=config).start()
    try:
        with pytest.raises(NatsServerError, match="uses the JetStream store"):
            EmbeddedNats(tmp_path / "shared", config=config).start()
    finally:
        first.stop()
    again = EmbeddedNats(tmp_path / "shared", config=config).start()  # free once stopped
    again.stop()


def test_a_killed_server_can_be_started_again_by_whoever_started_it(tmp_path: Path) -> None:
    """The store's lock once belonged to the process that started the server, so a
    SIGKILLed node of the fault campaign could never be restarted: the lock is the
    server's now, held while it runs and gone with it."""
    node = EmbeddedNats(tmp_path / "store").start()
    try:
        with pytest.raises(NatsServerError, match="uses the JetStream store"):
            EmbeddedNats(tmp_path / "store").start()  # held by the running server
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        node.start()
        assert node.process.poll() is None
    finally:
        node.stop()


async def test_a_client_of_the_old_contract_is_told_so(
    nats_server: EmbeddedNats, nc: Client
) -> None:
    """A v2 client asks on council.ask, which no person's question uses any more: it
    gets rejected{old_contract}, naming where to ask, not silence."""
    async with council(nats_server):
        payload = encode(Question(question="What is 2+2?"))
        reply = decode_ask_reply((await request(nc, subjects.ASK, payload, timeout_s=5)).data)
    assert isinstance(reply, Rejected)
    assert reply.reason == "old_contract"
    assert "council.ask.<person>" in reply.detail
