"""redis-server (Debian's package) on loopback, in memory only: what multi-node LiveKit shares.

LiveKit's nodes keep rooms, the room → node map and their RPC bus in one Redis; a test cluster
gets a throwaway instance here. Nothing is persisted (no RDB snapshots, no append-only file).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devstack.ports import free_tcp_port
from devstack.process import LoopbackServer, ServerProcess, find_binary

INSTALL_HINT = "scripts/setup   (as root it runs: apt-get install redis-server)"
PROBE_TIMEOUT_S = 2.0


def find_redis_server() -> str:
    return find_binary("redis-server", INSTALL_HINT)


@dataclass
class RedisServer(LoopbackServer):
    data_dir: Path
    name: str = "redis"
    port: int = field(default_factory=free_tcp_port)
    process: ServerProcess | None = None

    @property
    def address(self) -> str:
        """host:port, the form LiveKit's ``redis.address`` takes."""
        return f"127.0.0.1:{self.port}"

    def config_text(self) -> str:
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            # Memory only: a test's state dies with the process.
            'save ""',
            "appendonly no",
            f'dir "{self.data_dir}"',
            "daemonize no",
            'logfile ""',  # stdout, which ServerProcess sends to <data_dir>/redis.log
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 20.0) -> None:
        binary = find_redis_server()
        conf = self.write_config(f"{self.name}.conf", self.config_text())
        self.launch([binary, str(conf)], self._healthy, timeout)

    def _healthy(self) -> bool:
        try:
            return self.command("PING") == ["PONG"]
        except (OSError, subprocess.SubprocessError):
            return False

    def command(self, *args: str, timeout: float = PROBE_TIMEOUT_S) -> list[str]:
        """One command through ``redis-cli`` (Debian's redis-tools, installed with the server), its
        reply one line per element, e.g. ``command("HGET", "room_node_map", room)``; a missing
        value is an empty line. For probes and for a test reading what LiveKit stored."""
        done = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--raw", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout.splitlines()
