"""psutil heartbeats on ``council.health.<node>``, shared by every role."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import structlog
from nats.aio.client import Client

from council.bus import subjects
from council.bus.codec import encode
from council.bus.messages import NodeHealth
from council.bus.tunables import tunable

log = structlog.get_logger()

Describe = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Health:
    """How a process shows itself on the bus (each role's heartbeat)."""

    heartbeat: float = tunable(2.0, "COUNCIL_HEARTBEAT", "seconds between health heartbeats")
    node: str = tunable(
        "",
        "COUNCIL_NODE",
        "node name in heartbeats (agents append -ROLE to a set name); a chairman resumes the "
        "sessions of its name",
        shown="HOST-ROLE-PID; HOST-chairman",
    )

    def node_of(self, role: str) -> str:
        """This process's node name in ``role``: the name set, with the role, else
        ``host-role-pid``."""
        return f"{self.node}-{role}" if self.node else default_node_name(role)


def default_node_name(role: str, *, unique: bool = True) -> str:
    """``host-role-pid``; without the pid where a restart must keep its name."""
    name = f"{socket.gethostname()}-{role}"
    return f"{name}-{os.getpid()}" if unique else name


def snapshot(node: str, role: str, describe: Describe | None = None) -> NodeHealth:
    process = psutil.Process()
    extra = describe() if describe else {}
    return NodeHealth(
        node=node,
        role=role,
        pid=process.pid,
        cpu_percent=psutil.cpu_percent(interval=None),
        ram_percent=psutil.virtual_memory().percent,
        rss_mb=round(process.memory_info().rss / 2**20, 1),
        **extra,
    )


async def run_heartbeat(
    nc: Client,
    *,
    node: str,
    role: str,
    describe: Describe | None = None,
    interval_s: float = Health.heartbeat,
) -> None:
    """Publish a NodeHealth every ``interval_s`` until cancelled."""
    psutil.cpu_percent(interval=None)  # prime: the first reading is always 0
    subject = subjects.health(node)
    while True:
        try:
            await nc.publish(subject, encode(snapshot(node, role, describe)))
        except Exception as exc:  # a heartbeat must never kill its process
            log.warning("heartbeat_failed", error=repr(exc))
        await asyncio.sleep(interval_s)
