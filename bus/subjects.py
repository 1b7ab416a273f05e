"""Every NATS subject council uses, spelled once.

Request subjects (``council.ask``, ``council.agent.>``, the roster) must stay
out of the ``COUNCIL`` stream: a stream that captures a request subject answers
the request itself with its PubAck.
"""

from __future__ import annotations

import re

ASK = "council.ask"
"""Where a client of contract v2 asked: a chairman refuses it as an old contract."""
ASKS = "council.ask.*"
"""Every person's questions (a chairman of the queue group admits each)."""
STOPS = "council.stop.*"
"""A session stopped: every chairman hears it (no queue group), the one running the
session answers."""
FORGETS = "council.forget.*"
"""A conversation deleted (a chairman of the queue group purges it)."""
DOCUMENT_PARTS = "council.document.*"
"""Every person's large files, a part at a time (a chairman of the queue group keeps
each in the documents' object store)."""
DOCUMENTS = "COUNCIL_DOCUMENTS"
"""The object store of large files' text: only chairmen write and read it."""

ANYONE = "anyone"
"""The person of a connection with no user (a server without users has one person)."""
ROSTER = "council.agents.roster"
PRESETS = "council.presets"
"""The council's named presets (request/reply): any chairman of the queue group."""
ALL = "council.>"

STREAM = "COUNCIL"
LEASES = "COUNCIL_LEASES"
"""The key-value bucket of session leases: which chairman runs each open session."""
SESSIONS = "council.session.>"
LIVE = "council.live.>"
HEALTH = "council.health.>"
CONVERSATIONS = "council.conversation.>"
"""Each finished turn of a conversation, in the COUNCIL stream beside the sessions."""
CANCELS = "council.cancel.>"
"""Calls the chairman no longer needs: every agent hears them (no queue group), and
only the chairman may publish them."""

INBOX = "_INBOX"
"""Where replies go: each user's connections under ``_INBOX.<user>``, so nats.conf can
give each user its own inbox and no other."""

TOOL_RUN = "council.tool.run"
"""Run a program in the sandbox (request/reply): any tools process of the queue group."""

AGENTS_QUEUE = "council-agents"
TOOLS_QUEUE = "council-tools"
CHAIRMEN_QUEUE = "council-chairmen"

AGENT_KINDS = ("opinion", "review", "synthesize")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def ask(person: str) -> str:
    """Where ``person`` asks: nats.conf lets each person publish on their own only,
    so the chairman knows who asked from the subject, not from what the asker says."""
    return f"council.ask.{person}"


def stop(person: str) -> str:
    """Where a session of ``person`` is stopped (by them, or an admin)."""
    return f"council.stop.{person}"


def document(person: str) -> str:
    """Where ``person`` sends a part of a large file's text, as themselves."""
    return f"council.document.{person}"


def forget(person: str) -> str:
    """Where a conversation of ``person`` is deleted (by them, or an admin)."""
    return f"council.forget.{person}"


def person(user: str) -> str:
    """The person a NATS user is: their subject token."""
    return token(user) if user else ANYONE


def person_of(subject: str) -> str:
    """The person in an ask, stop, forget or document subject ("" in any other)."""
    parts = subject.split(".")
    verbs = ("ask", "stop", "forget", "document")
    if len(parts) == 3 and parts[0] == "council" and parts[1] in verbs:
        return parts[2]
    return ""


def owner_of(session_or_conversation: str) -> str:
    """Whose a session or conversation is: its id begins with its person's token
    (``alice.4f3a9c0d1e2b5a67``), so every subject it appears in is under that person
    and nats.conf can give each person their own subjects and no one else's."""
    person, dot, rest = session_or_conversation.partition(".")
    return person if dot and rest else ""


def owned(person: str, local_id: str) -> str:
    """The id of a session (or conversation) of ``person``."""
    return f"{person}.{local_id}"


def token(name: str) -> str:
    """A subject-safe token for a model or member name (`qwen2.5:0.5b` → `qwen2_5-0_5b`)."""
    cleaned = name.strip().replace(".", "_").replace(":", "-").replace("/", "-")
    return _UNSAFE.sub("_", cleaned) or "_"


def inbox_prefix(user: str) -> str:
    return f"{INBOX}.{token(user)}" if user else INBOX


def is_inbox(subject: str) -> bool:
    """Whether ``subject`` is a reply inbox: the only kind of subject council answers on."""
    return subject.startswith(INBOX + ".")


def agent(model: str, kind: str) -> str:
    """Any agent serving ``model`` (a queue group: the server picks one)."""
    if kind not in AGENT_KINDS:
        raise ValueError(f"unknown agent request kind {kind!r}")
    return f"council.agent.{token(model)}.{kind}"


def agent_on(model: str, kind: str, node: str) -> str:
    """The agent process ``node`` serving ``model``: where the chairman sends a request
    to the least busy agent."""
    return f"{agent(model, kind)}.{token(node)}"


def turn(conversation: str, session_id: str) -> str:
    return f"council.conversation.{conversation}.{session_id}"


def turns(conversation: str) -> str:
    return f"council.conversation.{conversation}.>"


def cancel(session_id: str) -> str:
    return f"council.cancel.{session_id}"


def session_event(session_id: str, kind: str) -> str:
    return f"council.session.{session_id}.{kind}"


def session_events(session_id: str) -> str:
    return f"council.session.{session_id}.>"


def session_of(subject: str) -> str:
    """The session id (``person.id``, two tokens) in a ``council.session.*``,
    ``council.live.*`` or ``council.cancel.*`` subject; "" in any other subject."""
    parts = subject.split(".")
    if len(parts) > 3 and parts[0] == "council" and parts[1] in ("session", "live", "cancel"):
        return f"{parts[2]}.{parts[3]}"
    return ""


def sessions_of(person: str) -> str:
    """Every event of every session of ``person``."""
    return f"council.session.{person}.>"


def live_of(person: str) -> str:
    """The live text of every session of ``person``."""
    return f"council.live.{person}.>"


def conversations_of(person: str) -> str:
    """Every turn of every conversation of ``person``."""
    return f"council.conversation.{person}.>"


def live(session_id: str, stage: str, member: str) -> str:
    return f"council.live.{session_id}.{stage}.{token(member)}"


def live_session(session_id: str) -> str:
    return f"council.live.{session_id}.>"


def health(node: str) -> str:
    return f"council.health.{token(node)}"
