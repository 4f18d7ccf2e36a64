"""One orchestrator replica (``switchboard orchestrator``) as a real subprocess, for the tests and
the bench: its own process group, ready when its /readyz is 200, always stopped."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from devstack.commands import switchboard_command
from devstack.ports import free_tcp_port
from devstack.probe import http_get, http_ok
from devstack.process import ServerProcess


@dataclass
class OrchestratorProcess:
    """Configured like a deployment: the config file and every setting through the environment."""

    workdir: Path
    config_path: Path
    nats_url: str
    # LiveKit's API (http) URL and credentials: a real livekit-server, or the bench's Twirp stand-in.
    livekit_url: str
    api_key: str
    api_secret: str
    name: str = "orchestrator"
    # SWITCHBOARD_LOG_LEVEL / _FORMAT when given; otherwise the orchestrator's defaults.
    log_level: str | None = None
    log_format: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_tcp_port)
    command: list[str] = field(default_factory=switchboard_command)
    process: ServerProcess | None = None

    def env(self) -> dict[str, str]:
        logging = {"SWITCHBOARD_LOG_LEVEL": self.log_level, "SWITCHBOARD_LOG_FORMAT": self.log_format}
        return {
            "NATS_URL": self.nats_url,
            "NATS_STARTUP_ATTEMPTS": "3",
            "LIVEKIT_URL": self.livekit_url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
            "SWITCHBOARD_CONFIG": str(self.config_path),
            "SWITCHBOARD_HTTP_PORT": str(self.http_port),
            **{name: value for name, value in logging.items() if value is not None},
            **self.extra_env,
        }

    def start(self, within: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [*self.command, "orchestrator"]
        self.process = ServerProcess(self.name, argv, self.workdir / f"{self.name}.log", env=self.env())
        self.process.start()
        self.process.wait_ready(self.ready, within)

    def probe(self, path: str) -> tuple[int, str]:
        """(status, body) of one of its HTTP endpoints (/readyz, /healthz, /metrics); 0 when down."""
        status, body = http_get(f"http://127.0.0.1:{self.http_port}{path}", timeout=1.0)
        return status, body.decode()

    def ready(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.http_port}/readyz")

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.pid is not None
        return self.process.pid

    def log_text(self) -> str:
        return (self.workdir / f"{self.name}.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process:
            self.process.stop(timeout=15.0)

    def kill(self) -> None:
        if self.process:
            self.process.kill()
