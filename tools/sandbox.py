"""Runs a program a model wrote, in bubblewrap, with nothing of the council's.

The program sees a read-only system (``/usr`` and Python's own install), a
private tmpfs as its only writable directory, no network (every namespace is
new), no environment but ``PATH``, and rlimits on CPU time, memory, processes
and file size; the tool adds a wall-clock limit and a cap on what it reads
back. As root it drops to a user of the program's own first (``SANDBOX_UIDS``): the
kernel never applies a process limit to root, so a fork bomb would not be
contained, and a user shared by programs would share their process limit.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import structlog

from council.bus.messages import ProgramOutcome, ProgramResult
from council.bus.tunables import tunable

log = structlog.get_logger()

SANDBOX_UIDS = range(0x7FFF0000, 0x7FFF0000 + 64)
"""As root, each program runs as a user of its own from this range (no account needs
to exist): RLIMIT_NPROC counts a user's processes, so a fork bomb in one program
cannot starve another running beside it."""
_CPU_SIGNAL_EXIT = 128 + signal.SIGXCPU
_KILLED_EXIT = 128 + signal.SIGKILL
STDERR_KEPT = 2000


@dataclass(frozen=True)
class Limits:
    """What one program may use: the settings of ``council tools``."""

    wall_s: float = tunable(
        10.0,
        "COUNCIL_SANDBOX_WALL",
        "seconds of wall time a program may run in the sandbox",
        flag="--sandbox-wall",
    )
    cpu_s: int = tunable(
        5,
        "COUNCIL_SANDBOX_CPU",
        "seconds of CPU time a program may use in the sandbox",
        flag="--sandbox-cpu",
    )
    memory_mb: int = tunable(
        512,
        "COUNCIL_SANDBOX_MEMORY",
        "MB of memory (address space) a sandboxed program may use",
        flag="--sandbox-memory",
    )
    processes: int = tunable(
        32,
        "COUNCIL_SANDBOX_PROCESSES",
        "processes a sandboxed program may run at once",
        flag="--sandbox-processes",
    )
    output_bytes: int = 64_000
    """What is read back from stdout and stderr together; a program printing more
    is stopped."""
    file_mb: int = 8
    """The largest file it may write (RLIMIT_FSIZE), and its tmpfs's size."""


def missing() -> str:
    """Why programs cannot be sandboxed here; "" when they can."""
    if not sys.platform.startswith("linux"):
        return "the sandbox needs Linux (bubblewrap)"
    if not shutil.which("bwrap"):
        return "bubblewrap is not installed (as root: apt-get install bubblewrap)"
    return ""


def _interpreter() -> Path:
    """The system's Python under ``/usr`` when there is one (readable by the sandbox's
    user, unlike a Python installed in a home directory), else the council's base
    Python (never a virtualenv's): the program gets the standard library only."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return Path(os.path.realpath(candidate))
    return Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))


def _system_binds() -> list[str]:
    """``/usr`` and the interpreter's prefix read-only; ``/bin``, ``/lib*`` as the host has
    them (links into ``/usr`` on a merged system, directories elsewhere)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/lib", "/lib64", "/lib32"):
        path = Path(top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            args += ["--ro-bind", top, top]
    python = _interpreter()
    if not python.is_relative_to("/usr"):
        prefix = python.parent.parent
        args += ["--ro-bind", str(prefix), str(prefix)]
    return args


def bwrap_command(limits: Limits) -> list[str]:
    return [
        "bwrap",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        *_system_binds(),
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(limits.file_mb << 20), "--tmpfs", "/tmp",
        "--chdir", "/tmp",
        str(_interpreter()), "-I", "-",
    ]  # fmt: skip


def _process_cap(limits: Limits) -> int:
    """RLIMIT_NPROC counts every process of the user: as root's sandbox user those are
    the program's; for another user, its processes now plus the program's allowance
    (programs run at once then share it)."""
    if os.geteuid() == 0:
        return limits.processes
    uid = os.getuid()
    mine = sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"].real == uid)
    return mine + limits.processes


def _limit_child(limits: Limits, processes: int, uid: int) -> None:
    """In the child before exec: rlimits, then (as root) the program's own user."""
    as_root = os.geteuid() == 0
    cap = {
        resource.RLIMIT_CPU: (limits.cpu_s, limits.cpu_s + 1),
        resource.RLIMIT_AS: (limits.memory_mb << 20,) * 2,
        resource.RLIMIT_NPROC: (processes,) * 2,
        resource.RLIMIT_FSIZE: (limits.file_mb << 20,) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for kind, (soft, hard) in cap.items():
        resource.setrlimit(kind, (soft, hard))
    if as_root:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


async def _read_capped(
    stream: asyncio.StreamReader, budget: list[int], over: asyncio.Event
) -> bytes:
    """Read until EOF (the program is killed once ``over`` is set, so EOF comes),
    keeping at most what the shared budget allows."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        room = budget[0]
        kept += chunk[:room]
        budget[0] = max(0, room - len(chunk))
        if len(chunk) > room:
            over.set()
    return bytes(kept)


class Sandbox:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.unavailable = missing()
        self._uids: asyncio.Queue[int] = asyncio.Queue()
        for uid in SANDBOX_UIDS:
            self._uids.put_nowait(uid)

    async def run(self, code: str) -> ProgramResult:
        if self.unavailable:
            return ProgramResult(outcome="unavailable", detail=self.unavailable)
        uid = await self._uids.get()
        try:
            return await self._run(code, uid)
        finally:
            self._uids.put_nowait(uid)

    async def _run(self, code: str, uid: int) -> ProgramResult:
        limits = self.limits
        started = time.perf_counter()
        processes = _process_cap(limits)
        process = await asyncio.create_subprocess_exec(
            *bwrap_command(limits),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=lambda: _limit_child(limits, processes, uid),
            start_new_session=True,
        )
        try:
            return await self._watch(process, code, started)
        except asyncio.CancelledError:  # the tool is stopping: the program goes with it
            _kill(process)
            raise

    async def _watch(
        self, process: asyncio.subprocess.Process, code: str, started: float
    ) -> ProgramResult:
        limits = self.limits
        assert process.stdin
        assert process.stdout
        assert process.stderr
        process.stdin.write(code.encode())
        process.stdin.close()
        budget, over = [limits.output_bytes], asyncio.Event()
        reads = asyncio.gather(
            _read_capped(process.stdout, budget, over),
            _read_capped(process.stderr, budget, over),
        )
        overflowed = asyncio.ensure_future(over.wait())
        waiting: set[asyncio.Future[Any]] = {reads, overflowed}
        done, _ = await asyncio.wait(
            waiting, timeout=limits.wall_s, return_when=asyncio.FIRST_COMPLETED
        )
        stopped: ProgramOutcome | None = None
        if over.is_set():
            stopped = "output_limit"
        elif reads not in done:
            stopped = "timeout"
        overflowed.cancel()
        if stopped:
            _kill(process)
        stdout, stderr = await reads
        exit_code = await process.wait()
        outcome = stopped or _outcome(exit_code, stderr)
        result = ProgramResult(
            outcome=outcome,
            exit_code=exit_code,
            stdout=stdout.decode(errors="replace"),
            stderr=stderr.decode(errors="replace")[-STDERR_KEPT:],
            wall_ms=round((time.perf_counter() - started) * 1000, 1),
            detail=_detail(outcome, limits),
        )
        log.info("program_ran", outcome=outcome, exit_code=exit_code, wall_ms=result.wall_ms)
        return result


def _kill(process: asyncio.subprocess.Process) -> None:
    """bwrap and, through --die-with-parent and its pid namespace, all the program's processes."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _outcome(exit_code: int, stderr: bytes) -> ProgramOutcome:
    if exit_code == 0:
        return "ok"
    if exit_code == _CPU_SIGNAL_EXIT:
        return "cpu_limit"
    tail = stderr[-400:]
    if b"MemoryError" in tail:
        return "memory_limit"
    if b"BlockingIOError" in tail or b"Resource temporarily unavailable" in tail:
        return "process_limit"
    if exit_code == _KILLED_EXIT:
        return "killed"
    return "error"


def _detail(outcome: ProgramOutcome, limits: Limits) -> str:
    return {
        "ok": "",
        "error": "the program stopped with an error",
        "timeout": f"stopped after {limits.wall_s:g} s of wall time",
        "cpu_limit": f"stopped after {limits.cpu_s} s of CPU time",
        "process_limit": f"tried to run more than {limits.processes} processes",
        "memory_limit": f"ran out of its {limits.memory_mb} MB of memory",
        "output_limit": f"printed more than {limits.output_bytes} bytes",
        "killed": "killed by a signal",
        "unavailable": "",
        "bad_request": "",
    }[outcome]
