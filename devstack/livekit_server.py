"""livekit-server v1.13.5 on loopback, with generated keys and an optional webhook target.

One server is a single node (no Redis). Several servers given the same ``redis_address`` and key
pair form one multi-node cluster: rooms, the room → node map and the nodes' RPC bus (signal relay,
agent job requests) live in that Redis; each node keeps its own ports and picks its own random node
id (``ND_…``) at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from livekit import api as lkapi

from devstack.ports import free_tcp_port, free_udp_port
from devstack.probe import http_ok
from devstack.process import LoopbackServer, MissingBinaryError, ServerProcess, cache_dir, find_binary

LIVEKIT_SERVER_VERSION = "v1.13.5"
# How the server logs its node id at start (see LiveKitServer.node_id); other lines carry other
# nodes' ids under the same key (a CreateRoom request's node_id, a relayed session's node).
_NODE_ID = re.compile(r'starting LiveKit server\s.*?"nodeID": "(ND_[A-Za-z0-9]+)"')
INSTALL_HINT = (
    "scripts/install-livekit-server   (needs Go; builds livekit-server " + LIVEKIT_SERVER_VERSION + ")"
)


def find_livekit_server() -> str:
    explicit = os.environ.get("LIVEKIT_SERVER_BIN")
    if explicit:
        if not Path(explicit).exists():
            raise MissingBinaryError(
                f"LIVEKIT_SERVER_BIN={explicit} does not exist. Install with: {INSTALL_HINT}"
            )
        return explicit
    cached = cache_dir() / "bin" / f"livekit-server-{LIVEKIT_SERVER_VERSION}"
    return find_binary("livekit-server", INSTALL_HINT, cached)


@dataclass
class LiveKitServer(LoopbackServer):
    data_dir: Path
    name: str = "livekit"
    port: int = field(default_factory=free_tcp_port)
    rtc_tcp_port: int = field(default_factory=free_tcp_port)
    rtc_udp_port: int = field(default_factory=free_udp_port)
    api_key: str = "devkey"
    # 32+ characters: shorter secrets are logged as an error by the server and warned on by PyJWT.
    api_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    webhook_urls: list[str] = field(default_factory=list)
    # The server drops jobs when every worker's load is >= target_load (default 0.7). Our workers
    # report load = active jobs / capacity and refuse jobs themselves when full, so let them fill.
    agents_target_load: float = 1.0
    log_level: str = "info"
    # Multi-node: "host:port" of the Redis the cluster's nodes share (None: a single node).
    redis_address: str | None = None
    # The node's region (config ``region``): stored with the node in Redis and sent to clients in
    # the join response's server info; only the ``regionaware`` node selector acts on it.
    region: str | None = None
    process: ServerProcess | None = None
    # A graceful stop waits for rooms to close; the second signal makes it quick.
    second_sigterm_after: ClassVar[float | None] = 0.5

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def config(self) -> dict[str, object]:
        conf: dict[str, object] = {
            "port": self.port,
            "bind_addresses": ["127.0.0.1"],
            "rtc": {
                "tcp_port": self.rtc_tcp_port,
                "udp_port": self.rtc_udp_port,
                "use_external_ip": False,
                "node_ip": "127.0.0.1",
            },
            "keys": {self.api_key: self.api_secret},
            "logging": {"level": self.log_level},
            "agents": {"target_load": self.agents_target_load},
        }
        if self.webhook_urls:
            conf["webhook"] = {"api_key": self.api_key, "urls": self.webhook_urls}
        if self.redis_address is not None:
            conf["redis"] = {"address": self.redis_address}
        if self.region is not None:
            conf["region"] = self.region
        return conf

    def start(self, timeout: float = 30.0) -> None:
        binary = find_livekit_server()
        # The config holds the API secret: pass it through the environment, never on argv.
        env = {"LIVEKIT_CONFIG": json.dumps(self.config())}
        self.launch([binary, "--node-ip", "127.0.0.1"], self._healthy, timeout, env=env)

    def _healthy(self) -> bool:
        return http_ok(self.http_url + "/")

    def node_id(self) -> str:
        """The id this run of the server picked for itself: it is random per start and not in any
        API answer, but logged once at start (``starting LiveKit server ... "nodeID": "ND_…"``),
        before the server answers /, so it is there once :meth:`start` returned."""
        assert self.process is not None, "not started"
        # The last one: a restart appends to the same log and picks a new id.
        found = _NODE_ID.findall(self.process.log_path.read_text(errors="replace"))
        if not found:
            raise RuntimeError(f"no nodeID in {self.process.log_path}")
        return str(found[-1])


@contextlib.asynccontextmanager
async def server_api(lk: LiveKitServer) -> AsyncIterator[lkapi.LiveKitAPI]:
    """A server API client for ``lk`` (one node of a cluster: that node only), closed afterwards."""
    client = lkapi.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret)
    try:
        yield client
    finally:
        await client.aclose()
