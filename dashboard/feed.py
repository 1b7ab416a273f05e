"""The dashboard's one background subscriber.

A NATS client belongs to the event loop that made it, and Streamlit reruns
scripts on other threads: the feed runs its own loop in a daemon thread (the
dashboard's own one per Streamlit server process, and one per browser session
of a person logged in with their own NATS user, closed when that session
ends: both held by ``st.cache_resource``), replays the COUNCIL stream from its
start, then stays live, and fills thread-safe views that the pages read. Pages
never wait on NATS except to ask.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog
from nats import nuid
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from council.bus import subjects
from council.bus.client.ask import forget as forget_conversation
from council.bus.client.ask import presets as list_presets
from council.bus.client.ask import roster as gather_roster
from council.bus.client.ask import stop as stop_session
from council.bus.client.ask import submit
from council.bus.codec import decode_delta, decode_health, read_event
from council.bus.errors import CouncilError
from council.bus.messages import (
    Accepted,
    AgentInfo,
    Forgotten,
    NodeHealth,
    PresetInfo,
    Question,
    Stopped,
)
from council.bus.transport.connection import Credentials, connect
from council.dashboard.view import SessionView

log = structlog.get_logger()

T = TypeVar("T")


class Feed:
    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | None = None,
        person: str = "",
        connect_wait_s: float = 30.0,
    ) -> None:
        """``person``: follow that person's sessions only (what their login may read);
        "": everyone's (the dashboard's own user, an admin)."""
        self.url = url
        self.credentials = credentials
        self.person = subjects.person(person) if person else ""
        self.connect_wait_s = connect_wait_s
        self.error = ""
        self._lock = threading.Lock()
        self._sessions: dict[str, SessionView] = {}
        # each session's copy as pages last got it, until the feed changes the session:
        # copying every session at every rerun cost a third of a core on a long history
        self._copies: dict[str, SessionView] = {}
        self._health: dict[str, NodeHealth] = {}
        self._seen_health: dict[str, float] = {}
        self._ready = threading.Event()
        self._nc: Client | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="council-feed", daemon=True)
        self._thread.start()

    # --- reading (any thread) -------------------------------------------------

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        return self._ready.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def sessions(self) -> list[SessionView]:
        """Every known session, newest first (copies, safe to read while the feed
        writes; shared by the pages' reruns, so not theirs to change)."""
        with self._lock:
            views = [self._copy(session_id) for session_id in self._sessions]
        return sorted(views, key=lambda v: v.started_at, reverse=True)

    def session(self, session_id: str) -> SessionView | None:
        with self._lock:
            return self._copy(session_id) if session_id in self._sessions else None

    def _copy(self, session_id: str) -> SessionView:
        if (kept := self._copies.get(session_id)) is None:
            kept = self._copies[session_id] = copy.deepcopy(self._sessions[session_id])
        return kept

    def health(self) -> list[tuple[NodeHealth, float]]:
        """Each node's last heartbeat and its age in seconds."""
        now = time.monotonic()
        with self._lock:
            return [(h, now - self._seen_health[n]) for n, h in sorted(self._health.items())]

    # --- acting (blocks the calling thread, never the feed) ----------------------

    def ask(self, question: Question, timeout_s: float = 10.0) -> Accepted:
        return self._call(self._submit(question, timeout_s), timeout_s + 2)

    def roster(self, window_s: float = 0.5) -> list[AgentInfo]:
        return self._call(self._roster(window_s), window_s + 5)

    def presets(self, timeout_s: float = 3.0) -> list[PresetInfo]:
        """The named councils the chairman runs, its defaults first."""
        return self._call(self._presets(timeout_s), timeout_s + 2)

    def forget(self, conversation_id: str, timeout_s: float = 30.0) -> Forgotten:
        """Delete a conversation from the stream, and from what this feed shows."""
        forgotten = self._call(self._forget(conversation_id, timeout_s), timeout_s + 2)
        with self._lock:
            for session_id in [*forgotten.sessions, conversation_id]:
                self._sessions.pop(session_id, None)
                self._copies.pop(session_id, None)
        return forgotten

    def stop(self, session_id: str, timeout_s: float = 3.0) -> Stopped:
        """Stop a running session (the Stop button)."""
        return self._call(self._stop(session_id, timeout_s), timeout_s + 2)

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the connection and end the feed's thread: a person's feed goes with
        their browser session, or it would follow their sessions for the server's life."""
        if self._loop.is_running():
            done = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            try:
                done.result(timeout_s)
            except TimeoutError:
                log.warning("feed_close_timed_out", url=self.url)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)

    async def _close(self) -> None:
        for task in asyncio.all_tasks():  # a connect still waiting for the server
            if task is not asyncio.current_task():
                task.cancel()
        if self._nc is not None:
            await self._nc.close()

    def _call(self, work: Coroutine[Any, Any, T], timeout_s: float) -> T:
        if not self.wait_ready(self.connect_wait_s):
            work.close()
            raise CouncilError(self.error or f"not connected to NATS at {self.url}")
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout_s)

    async def _submit(self, question: Question, timeout_s: float) -> Accepted:
        assert self._nc is not None
        return await submit(self._nc, question, timeout_s=timeout_s)

    async def _presets(self, timeout_s: float) -> list[PresetInfo]:
        assert self._nc is not None
        return await list_presets(self._nc, timeout_s=timeout_s)

    async def _forget(self, conversation_id: str, timeout_s: float) -> Forgotten:
        assert self._nc is not None
        return await forget_conversation(self._nc, conversation_id, timeout_s=timeout_s)

    async def _stop(self, session_id: str, timeout_s: float) -> Stopped:
        assert self._nc is not None
        return await stop_session(self._nc, session_id, reason="dashboard", timeout_s=timeout_s)

    async def _roster(self, window_s: float) -> list[AgentInfo]:
        assert self._nc is not None
        return await gather_roster(self._nc, window_s)

    # --- the feed's own thread -----------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.create_task(self._main())
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        try:
            self._nc = await connect(
                self.url,
                name="council-dashboard",
                credentials=self.credentials,
                initial_wait_s=self.connect_wait_s,
            )
            await self._nc.subscribe(subjects.HEALTH, cb=self._on_health)
            mine = self.person
            live = subjects.live_of(mine) if mine else subjects.LIVE
            await self._nc.subscribe(live, cb=self._on_live)
            await self._nc.jetstream().subscribe(
                subjects.sessions_of(mine) if mine else subjects.SESSIONS,
                stream=subjects.STREAM,
                cb=self._on_event,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
                # named: a person may create consumers on their own subjects only
                config=ConsumerConfig(name=nuid.NUID().next().decode()) if mine else None,
            )
        except Exception as exc:  # shown on every page instead of a blank dashboard
            self.error = f"cannot follow the council at {self.url}: {exc}"
            log.error("feed_failed", error=self.error)
            return
        self._ready.set()
        log.info("feed_ready", url=self.url)

    async def _on_event(self, msg: Msg) -> None:
        event = read_event(msg)
        if event is None:
            return
        with self._lock:
            view = self._sessions.setdefault(event.session_id, SessionView(event.session_id))
            view.follow(event)
            self._copies.pop(event.session_id, None)

    async def _on_live(self, msg: Msg) -> None:
        delta = decode_delta.read(msg)
        if delta is None:
            return
        with self._lock:
            view = self._sessions.setdefault(delta.session_id, SessionView(delta.session_id))
            view.add_delta(delta)
            self._copies.pop(delta.session_id, None)

    async def _on_health(self, msg: Msg) -> None:
        health = decode_health.read(msg)
        if health is None:
            return
        with self._lock:
            self._health[health.node] = health
            self._seen_health[health.node] = time.monotonic()
