"""Several "hosts" on one machine: Linux network namespaces on a private switch.

Topology (the root namespace is never touched: no link, address or route in it)::

    council-<pid>-<n>-switch   a namespace holding only the bridge br0
      br0 ── p-pc1 ═ veth ═ eth0 in council-<pid>-<n>-pc1   10.77.0.1/24
          ── p-pc2 ═ veth ═ eth0 in council-<pid>-<n>-pc2   10.77.0.2/24
          ── p-pc3 ═ veth ═ eth0 in council-<pid>-<n>-pc3   10.77.0.3/24

A bridge in a namespace of its own is a LAN switch: every host reaches every
other one by address, no host routes for another, and ``add()`` plugs in one
more host while the others run. Each host has its own ``lo``, so 127.0.0.1
on pc2 is pc2's alone: a process that reaches a server on pc1 did so by pc1's
address. Names carry the pid and a counter, so concurrent runs never meet,
and the addresses live only inside these namespaces, so they never clash.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from itertools import count
from pathlib import Path
from types import TracebackType
from typing import IO

SUBNET = "10.77.0"
BRIDGE = "br0"
_runs = count(1)


class HostsError(RuntimeError):
    """An `ip` command failed: its argv and stderr say why."""


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise HostsError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")


class Hosts:
    """Namespaces ``pc1``, ``pc2``... on one switch; ``close()`` removes every trace."""

    def __init__(
        self, names: Sequence[str] = ("pc1", "pc2", "pc3"), *, subnet: str = SUBNET
    ) -> None:
        self.prefix = f"council-{os.getpid()}-{next(_runs)}-"
        self.subnet = subnet
        self.names = list(names)
        self.addresses: dict[str, str] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._namespaces: list[str] = []

    def __enter__(self) -> Hosts:
        try:
            self._namespace("switch")
            ip("-n", self.namespace("switch"), "link", "add", BRIDGE, "type", "bridge")
            ip("-n", self.namespace("switch"), "link", "set", BRIDGE, "type", "bridge",
               "forward_delay", "0")  # fmt: skip
            ip("-n", self.namespace("switch"), "link", "set", BRIDGE, "up")
            for name in self.names:
                self.add(name)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def namespace(self, host: str) -> str:
        return self.prefix + host

    def address(self, host: str) -> str:
        return self.addresses[host]

    def add(self, host: str) -> str:
        """Plug a new host into the switch (also while others run); returns its address."""
        if host in self.addresses or len(host) > 13:  # "p-" + host must fit IFNAMSIZ (15)
            raise ValueError(f"host name taken or too long: {host!r}")
        address = f"{self.subnet}.{len(self.addresses) + 1}"
        ns, port = self._namespace(host), f"p-{host}"
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.namespace("switch"), "link", "add", port, "type", "veth",
           "peer", "name", "eth0", "netns", ns)  # fmt: skip
        ip("-n", self.namespace("switch"), "link", "set", port, "master", BRIDGE, "up")
        ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        self.addresses[host] = address
        if host not in self.names:
            self.names.append(host)
        return address

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """argv run inside ``host``; `ip netns exec` execs it, so the pid is argv's own."""
        return ["ip", "netns", "exec", self.namespace(host), *argv]

    def run(
        self,
        host: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        log_file: Path | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start argv on ``host``, stdout and stderr appended to log_file; stopped by close()."""
        out: IO[bytes] | int = log_file.open("ab") if log_file else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                self.command(host, argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT
            )
        finally:
            if not isinstance(out, int):
                out.close()  # the child holds its own copy
        self.processes.append(process)
        return process

    def can_connect(self, host: str, address: str, port: int, timeout_s: float = 2.0) -> bool:
        """Whether a TCP connection from ``host`` to address:port succeeds."""
        probe = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)"
        result = subprocess.run(
            self.command(host, [sys.executable, "-I", "-c", probe, address, str(port)]),
            capture_output=True, timeout=timeout_s + 30,
        )  # fmt: skip
        return result.returncode == 0

    @staticmethod
    def stop(process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
        """SIGTERM (the roles' clean shutdown), then SIGKILL; returns the exit code."""
        if process.poll() is None:
            process.terminate()
            try:
                return process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
        return process.wait()

    def close(self) -> None:
        """Stop every process, then delete the namespaces (their veths go with them)."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            self.stop(process)
        errors = []
        for ns in reversed(self._namespaces):
            self._kill_leftovers(ns)
            try:
                ip("netns", "del", ns)
            except HostsError as exc:
                errors.append(str(exc))
        self._namespaces.clear()
        if errors:
            raise HostsError("; ".join(errors))

    def _namespace(self, host: str) -> str:
        ns = self.namespace(host)
        ip("netns", "add", ns)
        self._namespaces.append(ns)
        return ns

    @staticmethod
    def _kill_leftovers(ns: str) -> None:
        """Processes our processes left in the namespace (a namespace outlives its name)."""
        listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in listed.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@functools.cache
def hosts_available() -> str | None:
    """None when namespaces work here, else why not (for ``pytest.skip``)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if not shutil.which("ip"):
        return "no `ip` command: install iproute2"
    try:
        with Hosts(("probe",)):
            pass
    except (HostsError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot create network namespaces and veth links: {exc}"
    return None
