"""Per-role users of the shipped nats.conf: each role can do its job and nothing else."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats.errors
import natsconf
import openai
import pytest
import structlog
from helpers import served
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig
from nats.js.errors import BadRequestError, NotFoundError
from streamlit.testing.v1 import AppTest
from test_browser import dashboard_in_chromium, find_or_install_chromium

import council.dashboard
from council.agents.runtimes.router import RoutedRuntime
from council.agents.runtimes.scripted import ScriptedRuntime
from council.api.server import ApiConfig, CouncilApi
from council.assembly.wiring import local_council
from council.bus import subjects
from council.bus.client.ask import follow, forget, stop, submit
from council.bus.codec import decode_stopped, encode
from council.bus.errors import BusUnavailable, NoCouncil, NotYours, QuestionRejected
from council.bus.events import FinalAnswer, Opinion
from council.bus.messages import Accepted, Completion, Question, Rejected, StopSession, Usage
from council.bus.transport.connection import Credentials, connect, request
from council.bus.transport.people import PeopleFile, permissions
from council.bus.transport.server import EmbeddedNats, free_port
from council.bus.transport.stream import CONSUMER_IDLE_S, conversations, open_sessions
from council.chairman.admission import Defaults
from council.cli.up import ROLES
from council.dashboard.config import ENV, DashboardConfig
from council.dashboard.feed import Feed

DASHBOARD_APP = Path(council.dashboard.__file__).parent / "app.py"
PEOPLE = {"bob": False, "root": True}
"""People the server knows besides the roles (name: admin), added as `council users` does."""


@pytest.fixture(scope="module")
def passwords() -> dict[str, str]:
    return {role: "p" + secrets.token_hex(12) for role in ROLES}


@pytest.fixture(scope="module")
def secure_server(
    tmp_path_factory: pytest.TempPathFactory, passwords: dict[str, str]
) -> Iterator[EmbeddedNats]:
    """nats-server with the repo's nats.conf (its store_dir moved to a temp folder)."""
    root = tmp_path_factory.mktemp("secure")
    config = root / "nats.conf"
    text = natsconf.NATS_CONF.read_text().replace('"./.council-jetstream"', f'"{root / "js"}"')
    config.write_text(text)
    people = PeopleFile(config)  # as `council users add` writes them
    for name, admin in PEOPLE.items():
        passwords[name] = people.add(name, admin=admin)
    env = {f"COUNCIL_{r.upper()}_PASSWORD": p for r, p in passwords.items()}
    server = EmbeddedNats(root, config=config, log_file=root / "nats.log", env=env).start()
    yield server
    server.stop()


async def as_role(server: EmbeddedNats, passwords: dict[str, str], role: str) -> Client:
    return await connect(server.url, name=role, credentials=Credentials(role, passwords[role]))


@pytest.fixture
async def secure_council(
    secure_server: EmbeddedNats, passwords: dict[str, str]
) -> AsyncIterator[None]:
    """Agents and a chairman, each connected as its own role."""
    runtime = ScriptedRuntime(["m1", "m2"], delay_s=0.6)  # long enough for `working` notes
    agent_nc = await as_role(secure_server, passwords, "agent")
    chair_nc = await as_role(secure_server, passwords, "chairman")
    routed = RoutedRuntime.serving(runtime, runtime.models)
    async with local_council(agent_nc, chair_nc, routed, Defaults(("m1", "m2"), "m1")):
        yield
    await agent_nc.close()
    await chair_nc.close()


@pytest.mark.parametrize("role", ["dashboard", "client"])
async def test_each_role_with_its_own_user_runs_a_whole_council(
    secure_server: EmbeddedNats, passwords: dict[str, str], secure_council: None, role: str
) -> None:
    """agent, chairman and a reader, each with only its permissions: a session finishes."""
    reader = await as_role(secure_server, passwords, role)
    try:
        accepted = await submit(reader, Question(question="q"))
        events = [e async for e in follow(reader, accepted.session_id, timeout_s=30)]
    finally:
        await reader.close()
    assert isinstance(events[-1], FinalAnswer)


async def test_a_person_cannot_read_stop_delete_or_continue_anothers_session(
    secure_server: EmbeddedNats, passwords: dict[str, str], secure_council: None
) -> None:
    """The client role is one person and the dashboard another: each operation of the
    client on the dashboard's session is refused, by the server or by the chairman
    (``not_yours``), and the session finishes untouched."""
    owner = await as_role(secure_server, passwords, "dashboard")
    other = await as_role(secure_server, passwords, "client")
    try:
        theirs = await submit(owner, Question(question="q"))
        sid = theirs.session_id
        assert subjects.owner_of(sid) == "dashboard"
        stopping = encode(StopSession(session_id=sid))  # on its own subject: the chairman says
        reply = await request(other, subjects.stop("client"), stopping, timeout_s=3)
        refusal = decode_stopped(reply.data)
        assert isinstance(refusal, Rejected)
        assert refusal.reason == "not_yours"
        with pytest.raises(NotYours, match="belongs to dashboard"):
            await stop(other, sid)  # on the owner's subject: the server refuses
        with pytest.raises(NotYours):
            await forget(other, sid)
        with pytest.raises(QuestionRejected) as continued:
            await submit(other, Question(question="and?", conversation=sid))
        assert continued.value.reason == "not_yours"
        with pytest.raises(NotYours, match="belongs to"):
            [e async for e in follow(other, sid, timeout_s=10)]
        events = [e async for e in follow(owner, sid, timeout_s=30)]
        listed = await conversations(other, "client")
        assert sid not in listed
        assert {subjects.owner_of(c) for c in listed} <= {"client"}
        assert sid in await conversations(owner, "dashboard")
    finally:
        await owner.close()
        await other.close()
    assert isinstance(events[-1], FinalAnswer)


async def refused(
    server: EmbeddedNats, passwords: dict[str, str], role: str, action: str, subject: str
) -> tuple[list[str], int]:
    """Try ``action`` on ``subject`` as ``role``; return the server's errors and what arrived."""
    watcher = await as_role(server, passwords, "chairman" if role != "chairman" else "client")
    arrived: list[bytes] = []
    with structlog.testing.capture_logs() as logs:
        nc = await as_role(server, passwords, role)
        try:
            if action == "publish":
                # a reader is allowed to see session events; it must see none of these
                reader = await as_role(server, passwords, "dashboard")
                sub = await reader.subscribe(subjects.SESSIONS)
                await reader.flush()
                await nc.publish(subject, encode({"type": "final_answer", "answer": "forged"}))
                await nc.flush()
                await asyncio.sleep(0.3)
                try:
                    while True:
                        arrived.append((await sub.next_msg(timeout=0.2)).data)
                except TimeoutError:
                    pass
                await reader.close()
            else:
                sub = await nc.subscribe(subject)
                await nc.flush()
                await asyncio.sleep(0.2)
                await watcher.publish(subject.replace(">", "x"), b"secret")
                await watcher.flush()
                try:
                    while True:
                        arrived.append((await sub.next_msg(timeout=0.3)).data)
                except TimeoutError:
                    pass
        finally:
            await nc.close()
            await watcher.close()
    errors = [str(e.get("error")) for e in logs if e.get("event") == "nats_error"]
    return errors, len(arrived)


@pytest.mark.parametrize(
    ("role", "action", "subject"),
    [
        ("agent", "publish", "council.session.s1.final_answer"),
        ("agent", "subscribe", "council.ask"),
        ("agent", "subscribe", "council.agent.>"),  # outside its queue group
        ("dashboard", "publish", "council.session.s1.opinion"),
        ("dashboard", "subscribe", "council.agent.>"),
        ("client", "publish", "council.session.s1.final_answer"),
        ("client", "publish", "council.agent.m1-x.opinion"),
        ("client", "publish", "council.tool.run"),  # only the chairman asks for a program
        ("agent", "publish", "council.tool.run"),
        ("tools", "publish", "council.session.s1.final_answer"),
        ("tools", "subscribe", "council.session.>"),
        ("tools", "subscribe", "council.tool.run"),  # outside its queue group
        ("tools", "subscribe", "council.agent.>"),
    ],
)
async def test_forbidden_operations_are_refused_and_change_nothing(
    secure_server: EmbeddedNats, passwords: dict[str, str], role: str, action: str, subject: str
) -> None:
    """The server refuses (a permissions violation reaches error_cb) and nothing is delivered."""
    errors, arrived = await refused(secure_server, passwords, role, action, subject)
    assert any("permissions violation" in e.lower() for e in errors), errors
    assert arrived == 0


def violations(logs: list[dict[str, object]]) -> list[str]:
    return [
        str(e.get("error"))
        for e in logs
        if e.get("event") == "nats_error" and "permissions violation" in str(e).lower()
    ]


async def test_a_client_can_neither_read_nor_forge_the_replies_of_others(
    secure_server: EmbeddedNats, passwords: dict[str, str], secure_council: None
) -> None:
    """The forgery that once worked: subscribe to every inbox and answer each agent's
    `working` note with a completion of one's own. Inboxes are per user now, and
    nobody may publish in one: the session's opinions and answer are the agents'."""
    attacker = await as_role(secure_server, passwords, "client")
    heard: list[str] = []

    async def forge(msg: Msg) -> None:
        heard.append(msg.subject)
        forged = Completion(member="m1", model="m1", text="forged", usage=Usage(), latency_ms=1)
        await attacker.publish(msg.subject, encode(forged))

    with structlog.testing.capture_logs() as logs:
        try:
            for subject in ("_INBOX.>", "_INBOX.chairman.>"):
                await attacker.subscribe(subject, cb=forge)
            await attacker.publish("_INBOX.chairman.x.y", b"{}")
            await attacker.flush()
            await asyncio.sleep(0.3)
            accepted = await submit(attacker, Question(question="q"))
            events = [e async for e in follow(attacker, accepted.session_id, timeout_s=30)]
        finally:
            await attacker.close()
    assert len(violations(logs)) >= 3, violations(logs)
    assert heard == []
    opinions = [e for e in events if isinstance(e, Opinion)]
    assert opinions
    assert all("forged" not in o.text for o in opinions)
    assert isinstance(events[-1], FinalAnswer)
    assert "forged" not in events[-1].answer


async def test_a_request_whose_reply_subject_is_not_an_inbox_is_refused_and_never_answered(
    secure_server: EmbeddedNats, passwords: dict[str, str], secure_council: None
) -> None:
    """Asking the chairman or the roster with the reply subject of a session's final
    answer once wrote a foreign message into the stream; now it is logged, unanswered."""
    client = await as_role(secure_server, passwords, "client")
    try:
        accepted = await submit(client, Question(question="q"))
        events = [e async for e in follow(client, accepted.session_id, timeout_s=30)]
        target = subjects.session_event(accepted.session_id, "final_answer")
        asks = subjects.ask("client")
        with structlog.testing.capture_logs() as logs:
            await client.publish(asks, encode(Question(question="q2")), reply=target)
            await client.publish(subjects.ROSTER, encode({}), reply=target)
            await client.flush()
            await asyncio.sleep(0.5)
        chairman = await as_role(secure_server, passwords, "chairman")  # may read the stream
        info = await chairman.jetstream().stream_info(subjects.STREAM, subjects_filter=target)
        await chairman.close()
    finally:
        await client.close()
    assert isinstance(events[-1], FinalAnswer)
    assert (info.state.subjects or {}).get(target) == 1  # the chairman's own answer only
    refused = [e for e in logs if e.get("event") == "reply_subject_refused"]
    assert {e["subject"] for e in refused} == {asks, subjects.ROSTER}
    assert not [e for e in logs if e.get("event") == "question_accepted"]


@pytest.mark.parametrize(
    "config",
    [
        ConsumerConfig(name="kept", durable_name="kept"),  # a durable, by name
        ConsumerConfig(durable_name="kept"),  # a durable, by the legacy subject
        ConsumerConfig(name="kept"),  # a named ephemeral
    ],
    ids=["durable", "legacy-durable", "named"],
)
async def test_a_reader_cannot_create_a_consumer_that_stays(
    secure_server: EmbeddedNats,
    passwords: dict[str, str],
    secure_council: None,
    config: ConsumerConfig,
) -> None:
    """Readers get ordered consumers only: a named or durable one is refused by the
    permissions (the request goes unanswered) and none exists afterwards."""
    client = await as_role(secure_server, passwords, "client")
    chairman = await as_role(secure_server, passwords, "chairman")
    try:
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(nats.errors.TimeoutError):
                await client.jetstream().add_consumer(subjects.STREAM, config, timeout=1.0)
        with pytest.raises(NotFoundError):
            await chairman.jetstream().consumer_info(subjects.STREAM, "kept")
    finally:
        await client.close()
        await chairman.close()
    assert violations(logs)


async def test_an_ephemeral_consumer_cannot_outlive_the_streams_limit(
    secure_server: EmbeddedNats, passwords: dict[str, str], secure_council: None
) -> None:
    """The one consumer a reader may create is ephemeral, and the stream refuses one
    that asks to outlive its reader by more than the limit; nor may a reader delete
    another's consumer."""
    client = await as_role(secure_server, passwords, "client")
    dashboard = await as_role(secure_server, passwords, "dashboard")
    chairman = await as_role(secure_server, passwords, "chairman")
    try:
        js = client.jetstream()
        with pytest.raises(BadRequestError, match="inactive threshold"):
            await js.add_consumer(
                subjects.STREAM,
                ConsumerConfig(
                    name="stays",
                    filter_subject=subjects.sessions_of("client"),
                    inactive_threshold=86_400,
                    deliver_subject=client.new_inbox(),
                ),
            )
        await dashboard.jetstream().subscribe(
            subjects.SESSIONS, stream=subjects.STREAM, ordered_consumer=True
        )
        [theirs] = [
            c
            for c in await chairman.jetstream().consumers_info(subjects.STREAM)
            if c.config.filter_subject == subjects.SESSIONS
            and (c.config.deliver_subject or "").startswith("_INBOX.dashboard.")
        ]
        assert theirs.config.inactive_threshold == CONSUMER_IDLE_S
        with pytest.raises(nats.errors.TimeoutError):
            await js.delete_consumer(subjects.STREAM, theirs.name)
        still = await chairman.jetstream().consumer_info(subjects.STREAM, theirs.name)
        assert still.name == theirs.name
    finally:
        await client.close()
        await dashboard.close()
        await chairman.close()


async def test_wrong_password_is_a_clear_error(secure_server: EmbeddedNats) -> None:
    """Bad credentials fail at connect, not a hang (with the server's reason when the
    refusal arrives before the server drops the connection)."""
    with pytest.raises(BusUnavailable, match="uthorization|reset by peer"):
        await connect(secure_server.url, name="x", credentials=Credentials("agent", "wrong"))


MINE, THEIRS = "client", "bob"
"""The person the client role is, and another person, whose subjects it must not touch."""
PROBES = (
    "council.ask", "council.ask.client", "council.ask.bob", "council.agents.roster",
    "council.presets", "council.document.client", "council.document.bob",
    "$O.COUNCIL_DOCUMENTS.C.x",
    "council.agent.m1.opinion", "council.session.client.s1.final_answer",
    "council.session.bob.s1.final_answer", "council.live.client.s1.opinions.m1",
    "council.live.bob.s1.opinions.m1", "council.health.n1", "council.cancel.client.s1",
    "council.stop.client", "council.stop.bob", "council.forget.client", "council.forget.bob",
    "council.conversation.client.c1.client.s1", "council.conversation.bob.c1.bob.s1",
    "_INBOX.chairman.x", "_INBOX.agent.x", "_INBOX.dashboard.x", "_INBOX.client.x", "_INBOX.x",
    "$JS.API.STREAM.CREATE.COUNCIL", "$JS.API.STREAM.UPDATE.COUNCIL",
    "$JS.API.STREAM.DELETE.COUNCIL", "$JS.API.STREAM.PURGE.COUNCIL",
    "$JS.API.STREAM.MSG.DELETE.COUNCIL", "$JS.API.STREAM.MSG.GET.COUNCIL",
    "$JS.API.STREAM.INFO.COUNCIL", "$JS.API.CONSUMER.CREATE.COUNCIL",
    "$JS.API.CONSUMER.CREATE.COUNCIL.x", "$JS.API.CONSUMER.DURABLE.CREATE.COUNCIL.x",
    "$JS.API.CONSUMER.CREATE.COUNCIL.x.council.session.client.>",
    "$JS.API.CONSUMER.CREATE.COUNCIL.x.council.session.bob.>",
    "$JS.API.CONSUMER.CREATE.COUNCIL.x.council.conversation.client.>",
    "$JS.API.CONSUMER.CREATE.COUNCIL.x.council.conversation.bob.>",
    "$JS.API.CONSUMER.CREATE.COUNCIL.x.council.session.>",
    "$JS.API.CONSUMER.DELETE.COUNCIL.x", "$JS.API.CONSUMER.INFO.COUNCIL.x",
    "$KV.COUNCIL_LEASES.client.s1", "$JS.FC.x", "council.tool.run", "_INBOX.tools.x",
    "council.ask.root", "_INBOX.bob.x", "_INBOX.root.x",
)  # fmt: skip
"""One subject of each family council uses, of the JetStream API around the stream, and
of each family once for the client role's own person and once for another's."""

JS_API = tuple(p for p in PROBES if p.startswith("$JS.API."))
READER = {
    ("publish", "council.agents.roster"): "lists the models agents serve",
    ("publish", "council.presets"): "lists the named councils",
    ("publish", "$JS.FC.x"): "answers an ordered consumer's flow control",
    ("subscribe", "council.health.n1"): "shows the nodes' health",
}


def person_needs(name: str) -> dict[tuple[str, str], str]:
    """What a person (the client role, or one `council users` added) needs: their own."""
    create = "$JS.API.CONSUMER.CREATE.COUNCIL.x"
    return {
        ("publish", f"council.ask.{name}"): "asks questions, as itself",
        ("publish", f"council.document.{name}"): "sends its large files, as itself",
        ("publish", f"council.stop.{name}"): "stops its own sessions",
        ("publish", f"council.forget.{name}"): "deletes its own conversations",
        ("publish", f"{create}.council.session.{name}.>"): "follows its own sessions",
        ("publish", f"{create}.council.conversation.{name}.>"): "reads its own conversations",
        ("subscribe", f"council.live.{name}.s1.opinions.m1"): "shows its answers as written",
        ("subscribe", f"_INBOX.{name}.x"): "its own replies",
    }


ADMIN = {
    ("publish", "council.ask.dashboard"): "asks questions, as itself",
    ("publish", "council.document.dashboard"): "sends its large files, as itself",
    **{
        ("publish", f"council.{verb}.{person}"): f"{verb}s anyone's (an admin)"
        for verb in ("stop", "forget")
        for person in (MINE, THEIRS)
    },
    **{
        ("publish", api): "reads every session and conversation (an admin)"
        for api in JS_API
        if api.startswith("$JS.API.CONSUMER.CREATE.COUNCIL")
        and api != "$JS.API.CONSUMER.CREATE.COUNCIL.x"  # a named consumer may be durable
    },
    **{
        ("subscribe", f"council.{family}.{person}.s1.{rest}"): "shows every session (an admin)"
        for family, rest in (("session", "final_answer"), ("live", "opinions.m1"))
        for person in (MINE, THEIRS)
    },
}
NEEDED: dict[str, dict[tuple[str, str], str]] = {
    "chairman": {
        ("publish", "council.session.client.s1.final_answer"): "records session events",
        ("publish", "council.session.bob.s1.final_answer"): "records session events",
        ("publish", "council.conversation.client.c1.client.s1"): "keeps conversations' turns",
        ("publish", "council.conversation.bob.c1.bob.s1"): "keeps conversations' turns",
        ("publish", "council.agent.m1.opinion"): "asks the agents",
        ("publish", "council.tool.run"): "runs computing members' programs in the sandbox",
        ("publish", "council.agents.roster"): "asks which models are served",
        ("publish", "council.health.n1"): "heartbeats",
        ("publish", "council.live.client.s1.opinions.m1"): "streams its own model's synthesis",
        ("publish", "council.live.bob.s1.opinions.m1"): "streams its own model's synthesis",
        ("publish", "council.cancel.client.s1"): "stops the calls it no longer waits for",
        **{("publish", api): "creates, checks and reads the stream" for api in JS_API},
        ("publish", "$KV.COUNCIL_LEASES.client.s1"): "holds session leases",
        ("subscribe", "council.ask"): "refuses clients of the old contract",
        ("subscribe", "council.presets"): "lists the presets it runs",
        **{
            ("subscribe", f"council.document.{person}"): "keeps people's large files"
            for person in (MINE, THEIRS)
        },
        ("publish", "$O.COUNCIL_DOCUMENTS.C.x"): "writes large files to their object store",
        **{
            ("subscribe", f"council.{verb}.{person}"): "takes questions, stops and deletes"
            for verb in ("ask", "stop", "forget")
            for person in (MINE, THEIRS, "root")
            if verb == "ask" or person != "root"
        },
        ("subscribe", "council.agent.m1.opinion"): "serves its own model, as an agent",
        ("subscribe", "council.agents.roster"): "answers the roster for its own model",
        ("subscribe", "council.health.n1"): "refuses to run beside a namesake",
        ("subscribe", "council.cancel.client.s1"): "stops its own model's calls, as an agent",
        ("subscribe", "_INBOX.chairman.x"): "its own replies",
    },
    "agent": {
        ("publish", "council.live.client.s1.opinions.m1"): "streams answers as they are written",
        ("publish", "council.live.bob.s1.opinions.m1"): "streams answers as they are written",
        ("publish", "council.health.n1"): "heartbeats",
        ("subscribe", "council.agent.m1.opinion"): "takes requests (in its queue group only)",
        ("subscribe", "council.agents.roster"): "answers the roster",
        ("subscribe", "council.cancel.client.s1"): "stops the calls the chairman no longer needs",
    },
    "tools": {
        ("publish", "council.health.n1"): "heartbeats",
        ("subscribe", "council.tool.run"): "takes programs to run (in its queue group only)",
    },
    "dashboard": {**READER, **ADMIN, ("subscribe", "_INBOX.dashboard.x"): "its own replies"},
    "client": {**READER, **person_needs("client")},
    "bob": {**READER, **person_needs("bob")},
    "root": {
        **READER,
        ("publish", "council.ask.root"): "asks questions, as itself",
        ("subscribe", "_INBOX.root.x"): "its own replies",
        **{
            k: why
            for k, why in ADMIN.items()
            if k[1].startswith(("council.stop", "council.forget"))
        },
        **{
            ("publish", f"$JS.API.CONSUMER.CREATE.COUNCIL.x.council.{family}.{person}.>"): (
                "reads everyone's sessions and conversations (an admin)"
            )
            for family in ("session", "conversation")
            for person in (MINE, THEIRS)
        },
        **{
            ("subscribe", f"council.live.{person}.s1.opinions.m1"): "shows everyone's live text"
            for person in (MINE, THEIRS)
        },
    },
}
"""Each operation a role's user is allowed, and why the role needs it."""


async def snapshot(nc: Client) -> tuple[int, int, list[str]]:
    """What a refused operation must not change: the stream's messages, and the sessions."""
    state = (await nc.jetstream().stream_info(subjects.STREAM)).state
    return state.messages, state.last_seq, await open_sessions(nc)


async def refusal(logs: list[dict[str, object]], subject: str) -> bool:
    """Whether the server's permissions violation for ``subject`` arrives (it is async;
    nats-py lowercases the server's message)."""
    for _ in range(40):
        if any(f'"{subject.lower()}"' in v.lower() for v in violations(logs)):
            return True
        await asyncio.sleep(0.025)
    return False


@pytest.fixture
def council_as_roles(
    secure_server: EmbeddedNats, passwords: dict[str, str], tmp_path: Path
) -> Iterator[Path]:
    """`council agents` and `council chairman` as real processes, each logged in as
    its role's user (scripted runtime); yields the folder of their logs."""
    env = {
        **os.environ,
        "COUNCIL_NATS_URL": secure_server.url,
        "COUNCIL_RUNTIME": "scripted",
        "COUNCIL_MEMBERS": "m1,m2",
        "COUNCIL_CHAIRMAN": "m1",
        "COUNCIL_STRATEGY": "synthesize",
        "COUNCIL_LOG_FORMAT": "json",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "council.cli", *command],
            env={
                **env,
                "COUNCIL_NATS_USER": role,
                "COUNCIL_NATS_PASSWORD": passwords[role],
                "COUNCIL_NODE": f"adversary-{role}",
            },
            stderr=(tmp_path / f"{role}.log").open("wb"),
        )
        for role, command in (("agent", ["agents"]), ("chairman", ["chairman", "--no-local-agent"]))
    ]
    yield tmp_path
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(30)


async def submitted(nc: Client, question: Question, wait_s: float = 60) -> Accepted:
    """``question`` accepted, once the council's processes are up and serve its models."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await submit(nc, question)
        except (NoCouncil, QuestionRejected):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.parametrize("role", [*ROLES, *PEOPLE])
async def test_every_operation_the_config_allows_is_needed_and_the_rest_is_refused(
    secure_server: EmbeddedNats, passwords: dict[str, str], council_as_roles: Path, role: str
) -> None:
    """Generated from nats.conf, against real `council` processes: for each subject
    family and each of publish, subscribe and a request with a chosen reply subject,
    the operation is either one the role needs, or refused by the server while
    nothing changes in the stream or in any session."""
    allowed = natsconf.permissions(secure_server.config or natsconf.NATS_CONF)[role]
    needed = NEEDED[role]
    asker = await as_role(secure_server, passwords, "client")
    observer = await as_role(secure_server, passwords, "chairman")
    nc = await as_role(secure_server, passwords, role)
    try:
        accepted = await submitted(asker, Question(question="q"))  # a session to protect
        [e async for e in follow(asker, accepted.session_id, timeout_s=30)]
        before = await snapshot(observer)
        unneeded, not_refused = [], []
        for operation in ("publish", "subscribe"):
            for subject in PROBES:
                if allowed.allows(operation, subject):
                    if (operation, subject) not in needed:
                        unneeded.append((operation, subject))
                    continue
                with structlog.testing.capture_logs() as logs:
                    if operation == "publish":
                        forged = {"type": "final_answer", "answer": "forged"}
                        await nc.publish(subject, encode(forged), reply=nc.new_inbox())
                    else:
                        await nc.subscribe(subject)
                    await nc.flush()
                    if not await refusal(logs, subject):
                        not_refused.append((operation, subject))
        # a request the role may send, with the reply subject of a session's final answer
        target = subjects.session_event(accepted.session_id, "final_answer")
        with structlog.testing.capture_logs() as logs:
            for subject in (
                subjects.ask(role),
                "council.agents.roster",
                "council.agent.m1.opinion",
            ):
                if allowed.allows("publish", subject):
                    await nc.publish(subject, encode(Question(question="q")), reply=target)
            await nc.flush()
            await asyncio.sleep(0.5)
        after = await snapshot(observer)
    finally:
        await nc.close()
        await observer.close()
        await asker.close()
    assert unneeded == [], "allowed by nats.conf but not needed by the role"
    assert [op for op in needed if not allowed.allows(*op)] == [], "needed but not allowed"
    assert not_refused == []
    assert after == before, "a refused operation changed the stream or a session"
    chairman_log = (council_as_roles / "chairman.log").read_text()
    assert chairman_log.count('"event": "question_accepted"') == 1  # the test's own
    if allowed.allows("publish", subjects.ask(role)):
        assert '"event": "reply_subject_refused"' in chairman_log


async def test_people_see_and_control_their_own_and_an_admin_everyones(
    secure_server: EmbeddedNats, passwords: dict[str, str], secure_council: None
) -> None:
    """bob (a person) and root (an admin), both as `council users` writes them: the
    client role cannot stop or read bob's session; root follows it, lists everyone's
    conversations, stops another of bob's and deletes bob's conversation."""
    bob = await as_role(secure_server, passwords, "bob")
    client = await as_role(secure_server, passwords, "client")
    root = await as_role(secure_server, passwords, "root")
    try:
        sid = (await submit(bob, Question(question="q"))).session_id
        assert subjects.owner_of(sid) == "bob"
        with pytest.raises(NotYours, match="belongs to bob"):
            await stop(client, sid)
        with pytest.raises(NotYours, match="belongs to"):
            [e async for e in follow(client, sid, timeout_s=10)]
        seen_by_root = [e async for e in follow(root, sid, timeout_s=30)]
        assert seen_by_root == [e async for e in follow(bob, sid, timeout_s=30)]
        everyone = await conversations(root)
        assert sid in everyone
        assert sid not in await conversations(client, "client")
        running = (await submit(bob, Question(question="q2"))).session_id
        stopped = await stop(root, running)
        assert stopped.session_id == running
        forgotten = await forget(root, sid)
        assert forgotten.sessions == [sid]
        assert sid not in await conversations(bob, "bob")
    finally:
        for nc in (bob, client, root):
            await nc.close()
    assert isinstance(seen_by_root[-1], FinalAnswer)


def test_council_users_adds_resets_and_removes_a_login_on_a_running_server(
    tmp_path: Path,
) -> None:
    """`council users` against a server started from the same nats.conf: each change
    is in force at once (the server reloads), and only a hash is written."""
    config = tmp_path / "nats.conf"
    config.write_text(
        natsconf.NATS_CONF.read_text().replace('"./.council-jetstream"', f'"{tmp_path / "js"}"')
    )
    env = {f"COUNCIL_{r.upper()}_PASSWORD": "p" + secrets.token_hex(8) for r in ROLES}
    server = EmbeddedNats(tmp_path, config=config, env=env).start()

    def users(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "council.cli", "users", *args, "--nats-config", str(config)],
            capture_output=True, text=True, check=True, cwd=tmp_path,
        )  # fmt: skip
        assert args[0] == "list" or "the server reloaded its users" in done.stdout
        return done.stdout

    def password(told: str) -> str:
        return told.split("password  ", 1)[1].split()[0]

    async def logs_in(user: str, secret: str) -> bool:
        try:
            nc = await connect(server.url, name=user, credentials=Credentials(user, secret))
        except BusUnavailable:
            return False
        await nc.close()
        return True

    try:
        first = password(users("add", "carol"))
        assert first not in config.read_text()
        assert asyncio.run(logs_in("carol", first))
        again = password(users("reset", "carol"))
        assert not asyncio.run(logs_in("carol", first))
        assert asyncio.run(logs_in("carol", again))
        assert "carol" in users("list")
        users("remove", "carol")
        assert not asyncio.run(logs_in("carol", again))
    finally:
        server.stop()


def test_the_client_role_is_a_person_with_the_permissions_council_users_writes() -> None:
    """The shipped client user and a person `council users` adds are one shape: the
    permissions of a person are declared once, in `people.permissions`."""
    shipped = natsconf.permissions()["client"]
    written = permissions("client", admin=False)
    assert sorted(shipped.publish) == sorted(written["publish"])
    assert sorted(shipped.subscribe) == sorted(written["subscribe"])


async def test_each_person_uses_the_api_with_a_key_of_their_own(
    secure_server: EmbeddedNats, passwords: dict[str, str], secure_council: None
) -> None:
    """With the official `openai` client: bob's key (his `council users` login) asks
    as bob, so his session is his and the client role cannot read it; a wrong
    password is a 401; the API's own key still asks as the API's user."""
    port = free_port()
    config = ApiConfig(secure_server.url, Credentials("client", passwords["client"]), "k-api")
    base = f"http://127.0.0.1:{port}/v1"
    async with served(CouncilApi(config).app(), port):
        bobs = openai.AsyncOpenAI(base_url=base, api_key=f"bob:{passwords['bob']}")
        asked = await bobs.chat.completions.create(
            model="council", messages=[{"role": "user", "content": "q"}]
        )
        sid = (asked.model_extra or {})["council"]["session_id"]
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(base_url=base, api_key="bob:wrong").models.list()
        apis = openai.AsyncOpenAI(base_url=base, api_key="k-api")
        own = await apis.chat.completions.create(
            model="council", messages=[{"role": "user", "content": "q"}]
        )
    other = await as_role(secure_server, passwords, "client")
    try:
        with pytest.raises(NotYours, match="belongs to"):
            [e async for e in follow(other, sid, timeout_s=10)]
    finally:
        await other.close()
    assert subjects.owner_of(sid) == "bob"
    assert asked.choices[0].message.content
    assert subjects.owner_of((own.model_extra or {})["council"]["session_id"]) == "client"


async def test_each_person_uses_mcp_over_http_with_a_login_of_their_own(
    secure_server: EmbeddedNats, passwords: dict[str, str], secure_council: None
) -> None:
    """With the MCP SDK's client: bob's bearer (his login) asks and lists as bob, and
    sees none of the client role's conversations; a wrong password is refused; the
    service's own key asks as the service's user."""
    import httpx2
    from mcp import Client as McpClient
    from mcp.client.streamable_http import streamable_http_client

    from council.api.mcp_server import Council, McpConfig, http_app, server

    port = free_port()
    council = Council(McpConfig(
        nats_url=secure_server.url, credentials=Credentials("client", passwords["client"]),
        key="k-mcp",
    ))  # fmt: skip
    app = http_app(server(council), council)
    url = f"http://127.0.0.1:{port}/mcp"

    async def call(bearer: str, tool: str, arguments: dict[str, object]) -> str:
        headers = {"Authorization": f"Bearer {bearer}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http,
            McpClient(streamable_http_client(url, http_client=http)) as client,
        ):
            result = await client.call_tool(tool, arguments)
        assert not result.is_error, result.content
        return "".join(getattr(c, "text", "") for c in result.content)

    try:
        async with served(app, port):
            bobs = await call(f"bob:{passwords['bob']}", "ask_council", {"question": "bob's?"})
            own = await call("k-mcp", "ask_council", {"question": "the service's?"})
            listed = json.loads(await call(f"bob:{passwords['bob']}", "list_conversations", {}))
            with pytest.raises(ExceptionGroup, match="TaskGroup") as refused:  # the SDK's way
                await call("bob:wrong", "list_conversations", {})
            assert "Server returned an error response" in repr(refused.value)
    finally:
        await council.close()
    assert "Conversation bob." in bobs
    assert "Conversation client." in own
    assert listed
    assert all(c["conversation"].startswith("bob.") for c in listed)


async def test_a_person_logged_into_the_dashboard_sees_and_asks_as_themselves(
    secure_server: EmbeddedNats,
    passwords: dict[str, str],
    secure_council: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bob logs into the dashboard with his own name and password (a wrong one is
    refused by the server): his feed holds his sessions only, and what he asks there
    is his. The dashboard's own login still sees everyone's."""
    config = DashboardConfig(
        nats_url=secure_server.url,
        credentials=Credentials("dashboard", passwords["dashboard"]),
        login="opensesame",
    )
    monkeypatch.setenv(ENV, config.env()[ENV])
    app = AppTest.from_file(str(DASHBOARD_APP), default_timeout=30)
    app.run()
    app.text_input[0].input("bob")
    app.text_input[1].input("wrong")
    app.button[0].click().run()
    assert [e.value for e in app.error] == ["Wrong name or password."]
    app.text_input[1].input(passwords["bob"])
    app.button[0].click().run()
    assert not app.exception
    assert [t.value for t in app.title] == ["Chat with the council"]

    client = await as_role(secure_server, passwords, "client")
    try:
        theirs = (await submit(client, Question(question="not bob's"))).session_id
        [e async for e in follow(client, theirs, timeout_s=30)]
    finally:
        await client.close()
    bobs = Feed(secure_server.url, credentials=Credentials("bob", passwords["bob"]), person="bob")
    everyone = Feed(secure_server.url, credentials=config.credentials)
    assert bobs.wait_ready(10)
    assert everyone.wait_ready(10)
    asked = await asyncio.to_thread(bobs.ask, Question(question="bob's"))
    for _ in range(100):
        seen = (everyone.session(theirs), everyone.session(asked.session_id))
        if bobs.session(asked.session_id) and all(seen):
            break
        await asyncio.sleep(0.1)
    assert not bobs.error
    assert subjects.owner_of(asked.session_id) == "bob"
    assert {subjects.owner_of(v.session_id) for v in bobs.sessions()} == {"bob"}
    assert everyone.session(theirs) is not None
    assert everyone.session(asked.session_id) is not None
    for feed in (bobs, everyone):  # as when bob's browser session ends: nothing left behind
        await asyncio.to_thread(feed.close)
        assert not feed.connected
        assert not feed.running


@pytest.mark.browser
async def test_a_person_logs_into_the_dashboard_in_a_browser_and_asks_as_themselves(
    secure_server: EmbeddedNats, passwords: dict[str, str], secure_council: None
) -> None:
    """In Chromium, on `council dashboard` as a process (logged into NATS as the
    `dashboard` user): bob's wrong password is refused by the server; with his own he
    gets the Chat page, and the question he asks there is his conversation."""
    chromium = find_or_install_chromium()
    if chromium is None:
        pytest.skip("no Chromium, and it cannot be installed here (needs root and apt-get)")
    env = {
        **os.environ,
        "COUNCIL_NATS_URL": secure_server.url,
        "COUNCIL_NATS_USER": "dashboard",
        "COUNCIL_NATS_PASSWORD": passwords["dashboard"],
        "COUNCIL_DASHBOARD_LOGIN": "opensesame",
    }
    await asyncio.to_thread(log_in_and_ask, chromium, env, passwords["bob"])
    bob = await as_role(secure_server, passwords, "bob")
    try:
        asked = [t[0].question for t in (await conversations(bob, "bob")).values()]
    finally:
        await bob.close()
    assert "Which colour is the sky?" in asked


def log_in_and_ask(chromium: str, env: dict[str, str], password: str) -> None:
    """`council dashboard` as a process, and bob in Chromium: a wrong password, his
    own, then a question on the Chat page."""
    from playwright.sync_api import expect

    with dashboard_in_chromium(chromium, env) as page:
        page.get_by_role("textbox", name="Name").fill("bob")
        page.get_by_role("textbox", name="Password").fill("wrong")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("Wrong name or password.")).to_be_visible(timeout=60_000)
        page.get_by_role("textbox", name="Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("Chat with the council")).to_be_visible(timeout=60_000)
        box = page.get_by_placeholder("Ask the council")
        box.fill("Which colour is the sky?")
        box.press("Enter")
        expect(page.get_by_text("Deliberation")).to_have_count(1, timeout=120_000)
