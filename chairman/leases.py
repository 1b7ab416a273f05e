"""Who runs each open session: a lease per session in a JetStream key-value bucket.

The bucket's time to live is the lease: a chairman renews the lease of every
session it runs, so a session whose chairman died and never came back (or
was cut off) has no live lease once the time to live has passed. Then any chairman
may take the session over; a key-value `create` decides which one, since
only one create of a key can win.
"""

from __future__ import annotations

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from council.bus import subjects

log = structlog.get_logger()


class Leases:
    def __init__(self, js: JetStreamContext, node: str, *, ttl_s: float, replicas: int = 1):
        self.js = js
        self.node = node
        self.ttl_s = ttl_s
        self.replicas = replicas
        self._kv: KeyValue | None = None
        self._revisions: dict[str, int] = {}

    async def start(self) -> None:
        """Open the bucket, or create it: its time to live is fixed when it is created."""
        try:
            self._kv = await self.js.key_value(subjects.LEASES)
            ttl = (await self._kv.status()).ttl
            if ttl is not None and abs(ttl - self.ttl_s) > 0.01:
                log.warning(
                    "lease_ttl_differs",
                    bucket=subjects.LEASES,
                    ttl_s=ttl,
                    configured_s=self.ttl_s,
                    hint=f"nats kv del {subjects.LEASES} while no session runs, to recreate it",
                )
        except BucketNotFoundError:
            config = KeyValueConfig(
                bucket=subjects.LEASES, ttl=self.ttl_s, history=1, replicas=self.replicas
            )
            self._kv = await self.js.create_key_value(config)

    @property
    def kv(self) -> KeyValue:
        assert self._kv is not None, "Leases.start() first"
        return self._kv

    async def holder(self, session_id: str) -> str:
        """The node holding the session's live lease, or "" when none does."""
        return (await self._entry(session_id))[0]

    async def _entry(self, session_id: str) -> tuple[str, int | None]:
        """(holder, revision) of the session's live lease; ("", None) when none."""
        try:
            entry = await self.kv.get(session_id)
        except KeyNotFoundError:
            return "", None
        return (entry.value or b"").decode(), entry.revision

    async def claim(self, session_id: str) -> bool:
        """Take the session's lease: one nobody holds (new, or lapsed), or this node's
        own (it restarted). False when another chairman holds it."""
        try:
            self._revisions[session_id] = await self.kv.create(session_id, self.node.encode())
            return True
        except KeyWrongLastSequenceError:
            pass
        node, revision = await self._entry(session_id)
        if revision is None:  # it lapsed just now: one more try
            return await self.claim(session_id)
        if node != self.node:
            return False
        return await self._update(session_id, revision)

    async def renew(self, session_id: str) -> bool:
        """Keep the lease (or take it, if it could not be taken when the session began);
        False only when another chairman holds it. A bucket that cannot be reached is
        not a lost lease: it is tried again next time."""
        revision = self._revisions.get(session_id)
        try:
            if revision is None:
                return await self.claim(session_id)
            return await self._update(session_id, revision)
        except nats.errors.Error as exc:
            log.warning("lease_renewal_failed", session_id=session_id, error=repr(exc))
            return True

    async def release(self, session_id: str) -> None:
        if self._revisions.pop(session_id, None) is None:
            return
        try:
            await self.kv.delete(session_id)
        except nats.errors.Error as exc:  # it lapses by itself
            log.debug("lease_release_failed", session_id=session_id, error=repr(exc))

    async def _update(self, session_id: str, revision: int) -> bool:
        try:
            self._revisions[session_id] = await self.kv.update(
                session_id, self.node.encode(), last=revision
            )
            return True
        except KeyWrongLastSequenceError:
            self._revisions.pop(session_id, None)
            return False
