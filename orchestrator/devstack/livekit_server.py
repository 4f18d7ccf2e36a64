"""livekit-server v1.13.5 on loopback, with generated keys and an optional webhook target."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.devstack.ports import free_tcp_port, free_udp_port
from orchestrator.devstack.process import MissingBinaryError, ServerProcess

LIVEKIT_SERVER_VERSION = "v1.13.5"
INSTALL_HINT = (
    "scripts/install-livekit-server   (needs Go; builds livekit-server " + LIVEKIT_SERVER_VERSION + ")"
)


def cache_dir() -> Path:
    explicit = os.environ.get("SWITCHBOARD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchboard"


def find_livekit_server() -> str:
    explicit = os.environ.get("LIVEKIT_SERVER_BIN")
    if explicit:
        if not Path(explicit).exists():
            raise MissingBinaryError(
                f"LIVEKIT_SERVER_BIN={explicit} does not exist. Install with: {INSTALL_HINT}"
            )
        return explicit
    cached = cache_dir() / "bin" / f"livekit-server-{LIVEKIT_SERVER_VERSION}"
    if cached.exists():
        return str(cached)
    found = shutil.which("livekit-server")
    if found:
        return found
    raise MissingBinaryError(f"livekit-server is not installed. Install it with: {INSTALL_HINT}")


@dataclass
class LiveKitServer:
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
    process: ServerProcess | None = None

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
        return conf

    def start(self, timeout: float = 30.0) -> None:
        binary = find_livekit_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The config holds the API secret: pass it through the environment, never on argv.
        env = {"LIVEKIT_CONFIG": json.dumps(self.config())}
        argv = [binary, "--node-ip", "127.0.0.1"]
        self.process = ServerProcess(self.name, argv, self.data_dir / f"{self.name}.log", env=env)
        self.process.start()
        self.process.wait_ready(self._healthy, timeout)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + "/", timeout=0.5) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        # A graceful stop waits for rooms to close; the second signal makes it quick.
        if self.process:
            self.process.stop(force_after=0.5)

    def kill(self) -> None:
        if self.process:
            self.process.kill()
