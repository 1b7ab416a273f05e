"""A nats-server cluster on loopback for tests and benchmarks: one config per node, routes to all.

Only tests and benchmarks start clusters; a real one is three machines each running
``nats-server -c nats.conf`` with the cluster block at the end of nats.conf.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from council.bus.transport.server import EmbeddedNats, free_port

CLUSTER_NAME = "council"


def node_config(name: str, store_dir: Path, cluster_port: int, route_ports: list[int]) -> str:
    """One node: a unique server_name (JetStream needs it), its route port, routes to all.

    A route to the node itself is allowed (the server ignores it), so every
    node can list the same routes.
    """
    routes = "\n".join(f"        nats-route://127.0.0.1:{port}" for port in route_ports)
    return (
        f"server_name: {name}\n"
        f'jetstream {{ store_dir: "{store_dir}" }}\n'
        f"cluster {{\n    name: {CLUSTER_NAME}\n    listen: 127.0.0.1:{cluster_port}\n"
        f"    routes: [\n{routes}\n    ]\n}}\n"
    )


@dataclass
class Cluster:
    nodes: list[EmbeddedNats]
    names: list[str]

    @property
    def urls(self) -> str:
        """The comma-separated form COUNCIL_NATS_URL takes."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> EmbeddedNats:
        return self.nodes[self.names.index(name)]

    def kill(self, name: str) -> None:
        """SIGKILL one node: a crash, with no graceful hand-over of leadership."""
        process = self.node(name).process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(root: Path, size: int = 3) -> Cluster:
    """``size`` nodes named n1..nN, each listening for clients and routes on free ports."""
    route_ports = [free_port() for _ in range(size)]
    names = [f"n{i + 1}" for i in range(size)]
    nodes = []
    for name, port in zip(names, route_ports, strict=True):
        home = root / name
        home.mkdir(parents=True, exist_ok=True)
        config = home / "nats.conf"
        config.write_text(node_config(name, home / "js", port, route_ports))
        nodes.append(EmbeddedNats(home, config=config, log_file=home / "nats.log"))
    cluster = Cluster(nodes, names)
    try:
        for node in nodes:
            node.start()
    except Exception:
        cluster.stop()
        raise
    return cluster
