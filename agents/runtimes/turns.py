"""Turns on the host's cores, shared by every council process on the host.

Two engines of two threads each on two cores fell 4-5x short of one (issue 14's
measurement): generations that compete for the cores lose far more than they
gain. So a generation that has every core takes the host's turn first: an
exclusive ``flock`` on one file per host (and a thread lock within a process).

A turn is a whole call: handing the cores over token by token cost more than it
saved (measured by ``bench.host_turns``). The kernel drops the lock of a process
that dies; one that is stopped (SIGSTOP, swapped out) keeps it, so a call waits
at most ``patience_s`` for its turn and then generates anyway: slower for a
while, never stalled.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from types import TracebackType

import structlog

log = structlog.get_logger()

PATIENCE_S = 120.0
"""Longer than a long call: a turn not given in this long is held by a process that
is not running."""
POLL_S = 0.01
COURTESY_S = 0.03
"""A process that just gave the turn back waits this long before taking it again,
so a process polling for it gets it."""


class HostTurns:
    """The host's turn: ``with turns:`` around one generation."""

    def __init__(self, path: Path | None, patience_s: float = PATIENCE_S) -> None:
        """``path``: the host's lock file (None: this process only)."""
        self.path = path
        self.patience_s = patience_s
        self._local = threading.Lock()
        self._fd: int | None = None
        self._held = False
        self._released_at = 0.0
        self.waited_out = 0
        """Calls that ran without the host's turn (its holder was not running)."""

    def __enter__(self) -> HostTurns:
        self._local.acquire()
        try:
            self._held = self.path is not None and self._take_host_turn()
        except BaseException:
            self._local.release()
            raise
        return self

    def _take_host_turn(self) -> bool:
        assert self.path is not None
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        time.sleep(max(0.0, self._released_at + COURTESY_S - time.monotonic()))
        deadline = time.monotonic() + self.patience_s
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.waited_out += 1
                    log.warning(
                        "host_turn_waited_out", path=str(self.path), waited_s=self.patience_s
                    )
                    return False
                time.sleep(POLL_S)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._held and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._released_at = time.monotonic()
        self._held = False
        self._local.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
