"""The sandbox attacked: hostile programs are contained with a named outcome, and the
tools role keeps serving on a real bus."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from nats.aio.client import Client

from council.bus import subjects
from council.bus.codec import decode_program_result, encode
from council.bus.messages import ProgramResult, RunProgram
from council.chairman.gateway import BusTools
from council.tools.sandbox import SANDBOX_UIDS, Limits, Sandbox, missing
from council.tools.service import ToolService

pytestmark = pytest.mark.skipif(bool(missing()), reason=missing() or "sandbox available")

LIMITS = Limits(wall_s=4.0, cpu_s=2, memory_mb=256, processes=16, output_bytes=10_000)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(LIMITS)


@pytest.fixture
async def tools(nc: Client) -> AsyncIterator[ToolService]:
    service = ToolService(nc, Sandbox(LIMITS), node=f"tools-{os.getpid()}", heartbeat_s=60)
    await service.start()
    yield service
    await service.stop()


def _exists(path: Path) -> bool:
    return path.exists()


async def _sandboxed_processes() -> list[psutil.Process]:
    """What still runs as a sandbox user (as root) a moment after a program is done:
    nothing (a zombie waiting for the host's init to reap it runs nothing)."""
    if os.geteuid() != 0:
        return []
    for _ in range(40):
        running = [
            p
            for p in psutil.process_iter(["uids", "status"])
            if p.info["uids"].real in SANDBOX_UIDS and p.info["status"] != psutil.STATUS_ZOMBIE
        ]
        if not running:
            break
        await asyncio.sleep(0.05)
    return running


async def test_a_program_prints_its_answer(sandbox: Sandbox) -> None:
    """A plain program runs and its output comes back."""
    result = await sandbox.run("print(sum(range(10)))")
    assert (result.outcome, result.printed, result.exit_code) == ("ok", "45", 0)


async def test_an_error_comes_back_with_its_traceback(sandbox: Sandbox) -> None:
    """A failing program is an ``error`` whose stderr names the exception."""
    result = await sandbox.run("x = 1 / 0")
    assert result.outcome == "error"
    assert "ZeroDivisionError" in result.stderr


async def test_an_endless_loop_is_stopped_by_its_cpu_limit(sandbox: Sandbox) -> None:
    """A busy loop ends at the CPU limit, well before anything hangs."""
    started = time.monotonic()
    result = await sandbox.run("while True:\n    pass")
    assert result.outcome in ("cpu_limit", "timeout")
    assert time.monotonic() - started < LIMITS.wall_s + 2


async def test_a_sleeping_program_is_stopped_by_its_wall_time(sandbox: Sandbox) -> None:
    """A program that waits without using CPU is stopped at the wall-time limit."""
    result = await sandbox.run("import time\ntime.sleep(60)")
    assert result.outcome == "timeout"
    assert result.wall_ms < (LIMITS.wall_s + 2) * 1000
    assert not await _sandboxed_processes()


async def test_a_fork_bomb_is_contained(sandbox: Sandbox) -> None:
    """Forking without end hits the process limit; nothing of it outlives the run."""
    result = await sandbox.run("import os\nwhile True:\n    os.fork()")
    assert result.outcome in ("process_limit", "timeout", "cpu_limit", "error")
    assert result.outcome != "ok"
    assert not await _sandboxed_processes()
    assert (await sandbox.run("print('after')")).printed == "after"


async def test_a_memory_bomb_is_contained(sandbox: Sandbox) -> None:
    """Allocating a gigabyte fails inside the program's memory limit."""
    result = await sandbox.run("x = bytearray(1 << 30)\nprint('allocated')")
    assert result.outcome == "memory_limit"
    assert "allocated" not in result.stdout


async def test_the_environment_holds_nothing_of_the_council(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc/self/environ and os.environ show no variable of the process that runs it."""
    monkeypatch.setenv("COUNCIL_NATS_PASSWORD", "s3cret-password")
    result = await sandbox.run(
        "import os\nprint(open('/proc/self/environ').read())\nprint(dict(os.environ))"
    )
    assert result.outcome == "ok"
    assert "s3cret-password" not in result.stdout
    assert "COUNCIL" not in result.stdout


async def test_the_council_files_and_models_cannot_be_read(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A file of the council (a model, a secret) and the home directory are not there."""
    secret = tmp_path / "models" / "weights.gguf"
    secret.parent.mkdir()
    secret.write_text("WEIGHTS")
    result = await sandbox.run(
        f"import os\nprint(os.path.exists({str(secret)!r}), os.path.exists({str(Path.home())!r}))\n"
        f"print(open({str(secret)!r}).read())"
    )
    assert result.outcome == "error"
    assert "False False" in result.stdout
    assert "WEIGHTS" not in result.stdout
    assert "FileNotFoundError" in result.stderr


async def test_a_socket_reaches_nothing(sandbox: Sandbox) -> None:
    """The program has a network of its own: a server listening on the host's loopback
    hears nothing, and no outside address is reachable."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        result = await sandbox.run(
            "import socket\n"
            f"for address in [('127.0.0.1', {port}), ('192.0.2.1', 80)]:\n"
            "    s = socket.socket()\n"
            "    s.settimeout(1)\n"
            "    try:\n"
            "        s.connect(address)\n"
            "        print('connected', address)\n"
            "    except OSError as exc:\n"
            "        print('refused', type(exc).__name__)\n"
        )
        with pytest.raises(BlockingIOError):
            server.accept()
    assert result.outcome == "ok"
    assert "connected" not in result.stdout
    assert result.stdout.count("refused") == 2


async def test_writing_outside_its_directory_fails(sandbox: Sandbox, tmp_path: Path) -> None:
    """The system is read-only and the host's directories are absent; its tmpfs is its own."""
    outside = tmp_path / "escaped.txt"
    result = await sandbox.run(
        "import pathlib\n"
        "pathlib.Path('/tmp/mine.txt').write_text('ok')\n"
        "print('tmp', pathlib.Path('/tmp/mine.txt').read_text())\n"
        f"for path in ['/usr/escaped.txt', {str(outside)!r}]:\n"
        "    try:\n"
        "        pathlib.Path(path).write_text('x')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
    )
    assert result.outcome == "ok"
    assert "tmp ok" in result.stdout
    assert "wrote" not in result.stdout
    assert not _exists(outside)
    assert not _exists(Path("/usr/escaped.txt"))


async def test_printing_a_gigabyte_is_cut_off(sandbox: Sandbox) -> None:
    """Output past the cap stops the program at once, and only the cap is kept."""
    started = time.monotonic()
    result = await sandbox.run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert result.outcome == "output_limit"
    assert len(result.stdout) + len(result.stderr) <= LIMITS.output_bytes
    assert time.monotonic() - started < LIMITS.wall_s


async def test_without_bubblewrap_the_sandbox_says_so() -> None:
    """A sandbox that cannot run programs answers ``unavailable`` with the reason."""
    sandbox = Sandbox(LIMITS)
    sandbox.unavailable = "bubblewrap is not installed"
    result = await sandbox.run("print(1)")
    assert (result.outcome, result.detail) == ("unavailable", "bubblewrap is not installed")


async def test_the_tools_role_serves_hostile_programs_and_goes_on(
    nc: Client, tools: ToolService
) -> None:
    """Over the bus, at once: a fork bomb, a memory bomb, a flood and a plain program,
    each answered with its own outcome (the bomb starves none of the others); then
    another plain program."""
    gateway = BusTools(nc, timeout_s=20)
    hostile = {
        "import os\nwhile True:\n    os.fork()": {"process_limit", "timeout", "cpu_limit", "error"},
        "x = bytearray(1 << 30)": {"memory_limit"},
        "while True:\n    print('y' * 1000)": {"output_limit"},
        "print(sum(range(100)))": {"ok"},  # beside a fork bomb: each program has its own user
    }
    results = await asyncio.gather(*(gateway.run(RunProgram(code=c)) for c in hostile))
    for (code, allowed), result in zip(hostile.items(), results, strict=True):
        assert result.outcome in allowed, (code, result)
    assert (await gateway.run(RunProgram(code="print(2 ** 10)"))).printed == "1024"
    assert tools.served == 5


async def test_a_malformed_request_gets_a_named_reply(nc: Client, tools: ToolService) -> None:
    """Garbage, an empty program and an unknown field each get ``bad_request``."""
    for data in (b"not json", encode({"code": ""}), encode({"code": "print(1)", "shell": True})):
        reply = await nc.request(subjects.TOOL_RUN, data, timeout=10)
        result = decode_program_result(reply.data)
        assert result.outcome == "bad_request"
        assert result.detail
    assert (await BusTools(nc).run(RunProgram(code="print('ok')"))).printed == "ok"


async def test_no_tools_process_is_unavailable_not_an_error(nc: Client) -> None:
    """With no tools process on the bus, a run is ``unavailable`` and says what to start."""
    result = await BusTools(nc, timeout_s=1).run(RunProgram(code="print(1)"))
    assert isinstance(result, ProgramResult)
    assert result.outcome == "unavailable"
    assert "council tools" in result.detail
