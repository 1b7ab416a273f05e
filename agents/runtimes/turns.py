"""Turns on the host's cores, shared by every council process on the host.

Two engines of two threads each on two cores fell 4-5x short of one (issue 14's
measurement): generations that compete for the cores lose far more than they
gain. So every generation takes a turn first: the models of one process take
turns through a thread lock, and the processes of one host (the agents, the
chairman's own model) through an exclusive ``flock`` on one file per host. A
lock file is released by the kernel when its process dies, so a killed agent
never leaves the others waiting.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType


class HostTurns:
    """A turn on the cores: ``with turns:`` around a generation or a batch step."""

    def __init__(self, path: Path | None) -> None:
        """``path``: the host's lock file (None: this process only)."""
        self.path = path
        self._local = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> HostTurns:
        self._local.acquire()
        if self.path is not None:
            try:
                if self._fd is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._local.release()
                raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._local.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
