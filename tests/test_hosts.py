"""A council across hosts: network namespaces on one machine stand in for PCs.

pc1 runs nats-server (the shipped nats.conf, a user per role, listening on
pc1's address only) and `council chairman`; other hosts run `council agents`
and reach pc1 by address alone (see hosts.py for the topology). The logs of
each process show which host did the work.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
from conftest import MEMBERS, council_env
from hosts import Hosts, hosts_available

from council.bus.transport.server import find_nats_server
from council.cli.up import ROLES

NATS_CONF = Path(__file__).parent.parent / "nats.conf"
PORT = 4222
ROLE_USERS = {"chairman": "chairman", "agents": "agent", "ask": "client"}
"""The nats.conf user each command logs in as."""
READY_S = 120.0
"""Start-up on 2 busy cores: loading a model in two processes at once can take a while."""


@pytest.fixture(scope="session", autouse=True)
def _namespaces_work() -> None:
    """Skip before any other fixture: session fixtures (a model pull) come first otherwise."""
    if reason := hosts_available():
        pytest.skip(reason)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    with Hosts() as made:
        yield made


@pytest.fixture
def passwords() -> dict[str, str]:
    """Fresh per-role passwords, in the form nats.conf asks for (a letter, then hex)."""
    return {role: "p" + secrets.token_hex(12) for role in ROLES}


def wait_for(
    ready: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path
) -> None:
    """Poll until ``ready()``; fail at once if ``process`` dies, with its log's tail."""
    deadline = time.monotonic() + READY_S
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"{what}: exited with {process.returncode}\n{tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not ready in {READY_S} s\n{tail(log)}")
        time.sleep(0.1)


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def log_events(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of a COUNCIL_LOG_FORMAT=json log (other lines, e.g. llama.cpp's, skipped)."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def llm_calls(log: Path, sessions: set[str], kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """Agent calls (succeeded or failed) of these sessions and kinds that this process served."""
    return [
        e
        for e in log_events(log)
        if e.get("event") in ("llm_call", "llm_call_failed")
        and e.get("session_id") in sessions
        and e.get("kind") in kinds
    ]


def start_nats(hosts: Hosts, tmp: Path, passwords: dict[str, str]) -> str:
    """nats-server on pc1 with the shipped nats.conf, on pc1's address only; returns its URL."""
    root = tmp / "nats"
    root.mkdir()
    shutil.copy(NATS_CONF, root)  # store_dir ./.council-jetstream lands in root
    env = {**os.environ, **{f"COUNCIL_{r.upper()}_PASSWORD": p for r, p in passwords.items()}}
    log = tmp / "pc1-nats.log"
    address = hosts.address("pc1")
    argv = [find_nats_server(), "-c", "nats.conf", "-a", address, "-p", str(PORT)]
    process = hosts.run("pc1", argv, env=env, log_file=log, cwd=root)
    wait_for(lambda: "Server is ready" in tail(log, 100_000), "nats-server", process, log)
    return f"nats://{address}:{PORT}"


@dataclass
class Role:
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Council:
    """Starts council commands on hosts, each as its nats.conf user, logging JSON lines."""

    hosts: Hosts
    env: dict[str, str]
    passwords: dict[str, str]
    tmp: Path

    def env_for(self, command: str, host: str) -> dict[str, str]:
        user = ROLE_USERS[command]
        return {
            **self.env,
            "COUNCIL_NATS_USER": user,
            "COUNCIL_NATS_PASSWORD": self.passwords[user],
            "COUNCIL_NODE": host,
        }

    def start(self, host: str, command: str) -> Role:
        """`council agents` or `council chairman` on ``host``, returned once it is ready."""
        log = self.tmp / f"{host}-{command}.log"
        argv = [sys.executable, "-m", "council.cli", command]
        process = self.hosts.run(host, argv, env=self.env_for(command, host), log_file=log)
        said_ready = f"{command}_ready"
        wait_for(
            lambda: any(e.get("event") == said_ready for e in log_events(log)),
            f"{host} {command}", process, log,
        )  # fmt: skip
        return Role(process, log)

    def stop(self, *roles: Role) -> None:
        """SIGTERM, as a user's Ctrl-C: each role must exit cleanly."""
        for role in roles:
            assert self.hosts.stop(role.process) == 0, tail(role.log)


def ask_command(question: str) -> list[str]:
    return [sys.executable, "-m", "council.cli", "ask", "--json", question]


def ask(council: Council, host: str, questions: list[str]) -> list[dict[str, Any]]:
    """`council ask --json` on ``host``, all questions at once; every one must finish."""
    env = council.env_for("ask", host)
    processes = [
        subprocess.Popen(
            council.hosts.command(host, ask_command(q)),
            env=env,
            stdout=PIPE,
            stderr=PIPE,
            text=True,
        )
        for q in questions
    ]
    finals = []
    for p in processes:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        finals.append(final_answer(out))
    return finals


def ask_when_ready(council: Council, host: str, question: str) -> dict[str, Any]:
    """As conftest's ask_json: retried while the chairman does not yet know the agents."""
    deadline = time.monotonic() + READY_S
    while True:
        result = subprocess.run(
            council.hosts.command(host, ask_command(question)),
            env=council.env_for("ask", host), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        not_ready = result.returncode == 3 or "unknown_model" in result.stderr
        if not not_ready or time.monotonic() > deadline:
            assert result.returncode == 0, result.stderr[-3000:]
            return final_answer(result.stdout)
        time.sleep(0.5)


def final_answer(stdout: str) -> dict[str, Any]:
    final: dict[str, Any] = json.loads(stdout)
    assert final["type"] == "final_answer", final
    assert final["answer"].strip()
    assert len(final["opinions"]) == 3
    return final


@pytest.mark.model
def test_council_across_hosts_with_a_real_model(
    hosts: Hosts,
    passwords: dict[str, str],
    models_dir: Path,
    test_model_path: Path,
    tmp_path: Path,
) -> None:
    """pc1: nats-server and chairman; pc2: agents; pc3: a client. pc2 does the opinions
    and reviews, and it reached pc1 by address (its own 127.0.0.1 has no server)."""
    url = start_nats(hosts, tmp_path, passwords)
    assert hosts.can_connect("pc2", hosts.address("pc1"), PORT)
    assert not hosts.can_connect("pc2", "127.0.0.1", PORT)
    assert not hosts.can_connect("pc1", "127.0.0.1", PORT)  # pc1's address only
    # Two model processes share this machine's cores: one thread each, or llama.cpp's
    # spinning threads starve each other (7× slower here when another run shares the cores).
    env = {**council_env(url, models_dir, tmp_path), "COUNCIL_THREADS": "1"}
    council = Council(hosts, env, passwords, tmp_path)
    chairman = council.start("pc1", "chairman")
    agents = council.start("pc2", "agents")

    final = ask_when_ready(council, "pc3", "What is 2 + 2?")

    assert {o["member"] for o in final["opinions"]} == set(MEMBERS)
    session = {final["session_id"]}
    assert len(llm_calls(agents.log, session, ("opinion",))) == 3
    assert len(llm_calls(agents.log, session, ("review",))) == 6  # pairwise: 3 × 2
    assert llm_calls(chairman.log, session, ("opinion", "review")) == []
    # synthesis goes to whichever serves the chairman's model: pc1's own agent or pc2
    synthesis = [llm_calls(r.log, session, ("synthesize",)) for r in (chairman, agents)]
    assert sum(map(len, synthesis)) == 1
    assert [e for e in log_events(agents.log) if e["level"] == "error"] == []  # user agent sufficed
    council.stop(agents, chairman)


def test_agents_on_two_hosts_share_the_work_and_a_new_host_joins(
    hosts: Hosts, passwords: dict[str, str], models_dir: Path, tmp_path: Path
) -> None:
    """Agents for the same models on pc2 and pc3 split the calls (one queue group); agents
    started later on a new host pc4 take calls too, with pc1's processes left untouched."""
    url = start_nats(hosts, tmp_path, passwords)
    env = {
        **council_env(url, models_dir, tmp_path),
        "COUNCIL_RUNTIME": "scripted",
        "COUNCIL_SCRIPTED_DELAY_MS": "300",  # calls last long enough to overlap
        "COUNCIL_MEMBERS": "m1,m2,m3",
        "COUNCIL_CHAIRMAN": "m1",
    }
    council = Council(hosts, env, passwords, tmp_path)
    chairman = council.start("pc1", "chairman")
    agents = {host: council.start(host, "agents") for host in ("pc2", "pc3")}

    first = ask_when_ready(council, "pc1", "Question 1?")
    finals = [first, *ask(council, "pc1", ["Question 2?", "Question 3?", "Question 4?"])]
    sessions = {f["session_id"] for f in finals}
    assert len(sessions) == 4
    kinds = ("opinion", "review")
    served = {host: len(llm_calls(a.log, sessions, kinds)) for host, a in agents.items()}
    assert all(served.values()), served
    assert sum(served.values()) == 4 * (3 + 6)

    hosts.add("pc4")  # a new machine on the LAN: nothing on pc1 is restarted or told
    agents["pc4"] = council.start("pc4", "agents")
    later = ask(council, "pc1", ["Question 5?", "Question 6?", "Question 7?"])
    later_sessions = {f["session_id"] for f in later}
    # 27 calls spread at random over 3 agents: pc4 gets none with odds (2/3)^27, 2e-5
    assert llm_calls(agents["pc4"].log, later_sessions, kinds), "pc4 served no call"
    assert chairman.process.poll() is None
    council.stop(*agents.values(), chairman)
