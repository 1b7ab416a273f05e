"""One budget of cores per host, divided among the council processes generating.

Agents of one host (and the agent that serves the chairman's model) each load
their own models; each assumed it owned every core, so two generating at once
ran twice the threads the host has, and llama.cpp's threads, which wait for each
other at every layer, lost time waiting for a thread the OS had set aside
(``bench.host_cores`` measures the difference). Here a process that generates
says so on a file of its own in a folder that the host's council processes
share (an exclusive ``flock`` held while it generates), and each generation runs
on its share of the cores: all of them for a process generating alone, half
each for two.

The kernel drops the lock of a process that dies, so a dead process never holds
cores; its file is removed by whoever finds it unlocked next.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REFRESH_S = 0.2
"""How long a count of the generating processes is trusted: a step of a batch is
tens of milliseconds, and looking at every file each step would cost more."""


class HostCores:
    """This process's share of the host's cores: ``hold()`` while it has calls in
    flight and ``release()`` after (or ``with cores.generating():``), ``share()``
    for the threads to run."""

    def __init__(self, directory: Path | None, cores: int, refresh_s: float = REFRESH_S) -> None:
        """``directory``: shared by the host's council processes (None: this process
        counts alone and always has every core)."""
        self.directory = directory
        self.cores = max(1, cores)
        self.refresh_s = refresh_s
        self._name = f"{os.getpid()}-{id(self):x}"
        """Its process and itself: two runtimes of one process count as two."""
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._holders = 0
        self._counted_at = -float("inf")
        self._others = 0

    @contextmanager
    def generating(self) -> Iterator[HostCores]:
        self.hold()
        try:
            yield self
        finally:
            self.release()

    def share(self) -> int:
        """The threads a generation here may run: the cores over the processes
        generating now (this one included)."""
        if self.directory is None:
            return self.cores
        with self._lock:
            now = time.monotonic()
            if now - self._counted_at >= self.refresh_s:
                self._others = self._count_others()
                self._counted_at = now
            return max(1, self.cores // (1 + self._others))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                if self.directory is not None:
                    (self.directory / self._name).unlink(missing_ok=True)

    def hold(self) -> None:
        """Count this process as generating (reentrant: one hold per call in flight)."""
        if self.directory is None:
            return
        with self._lock:
            self._holders += 1
            if self._holders == 1:
                if self._fd is None:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    path = self.directory / self._name
                    self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                self._counted_at = -float("inf")  # a new generation looks again

    def release(self) -> None:
        if self.directory is None:
            return
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _count_others(self) -> int:
        assert self.directory is not None
        try:
            names = [p for p in self.directory.iterdir() if p.name != self._name]
        except FileNotFoundError:
            return 0
        return sum(_generating(path) for path in names)


def _generating(path: Path) -> bool:
    """Whether the process of ``path`` holds its lock; a dead process's file goes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        pid = path.name.split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
        return False
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
