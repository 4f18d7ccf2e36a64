"""One pool worker (``switchboard worker``) as a real subprocess, for the tests and the bench.

It runs in its own process group, is ready once its health endpoint says it is registered with
LiveKit, and is always stopped: SIGTERM (the worker drains), then — only if something of its group
outlives it — SIGKILL to the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.commands import switchboard_command
from devstack.dev_config import DEMO_AGENT
from devstack.livekit_server import LiveKitServer
from devstack.ports import free_tcp_port
from devstack.probe import http_get
from devstack.process import ServerProcess
from shared import subjects


def worker_args(agent: str, region: str, pool: str, capacity: int, health_port: int) -> list[str]:
    """``switchboard worker``'s arguments (after the command) for one worker of ``pool``."""
    return [
        "worker",
        "--agent",
        agent,
        "--region",
        region,
        "--pool",
        pool,
        "--capacity",
        str(capacity),
        "--health-port",
        str(health_port),
    ]


@dataclass
class WorkerProcess:
    """The defaults suit a test (a small pool, a short drain); the bench's ``Worker`` sets its own."""

    livekit: LiveKitServer
    nats_url: str
    workdir: Path
    pool: str
    agent: str = DEMO_AGENT
    region: str = "eu-central"
    capacity: int = 2
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    health_port: int = field(default_factory=free_tcp_port)
    # What runs `switchboard worker` (the bench runs it through its shim).
    command: list[str] = field(default_factory=switchboard_command)
    nats_startup_attempts: int = 2
    drain_grace_s: float = 5.0
    register_timeout_s: float = 60.0
    # Put on the worker's PYTHONPATH: where user entrypoints (or the bench shim) are imported from.
    pythonpath: str | None = None
    process: ServerProcess | None = None

    @property
    def agent_name(self) -> str:
        return subjects.pool_agent_name(self.agent, self.pool)

    def argv(self) -> list[str]:
        args = worker_args(self.agent, self.region, self.pool, self.capacity, self.health_port)
        return [*self.command, *args, *self.extra_args]

    def env(self) -> dict[str, str]:
        return {
            "NATS_URL": self.nats_url,
            "NATS_STARTUP_ATTEMPTS": str(self.nats_startup_attempts),
            "LIVEKIT_URL": self.livekit.ws_url,
            "LIVEKIT_API_KEY": self.livekit.api_key,
            "LIVEKIT_API_SECRET": self.livekit.api_secret,
            # No config file: the worker runs on its flags and defaults, never on a switchboard.yaml
            # that happens to be in the caller's environment.
            "SWITCHBOARD_CONFIG": str(self.workdir / "absent-switchboard.yaml"),
            "SWITCHBOARD_WORKER_DRAIN_GRACE_S": f"{self.drain_grace_s:g}",
            **({"PYTHONPATH": self.pythonpath} if self.pythonpath else {}),
            **self.extra_env,
        }

    def launch(self) -> None:
        """Start the process without waiting for it to register."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = ServerProcess(
            f"worker-{self.pool}", self.argv(), self.workdir / f"worker-{self.pool}.log", env=self.env()
        )
        self.process.start()

    def start(self, timeout: float | None = None) -> None:
        """Start and wait until the worker is registered with LiveKit (its /healthz is 200)."""
        self.launch()
        assert self.process is not None
        within = self.register_timeout_s if timeout is None else timeout
        self.process.wait_ready(lambda: self.health()[0] == 200, within)

    def health(self, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
        status, body = http_get(f"http://127.0.0.1:{self.health_port}{path}")
        if status == 0:
            return 0, {}
        try:
            return status, json.loads(body or b"{}")
        except ValueError:
            return 0, {}

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.pid is not None
        return self.process.pid

    def sigterm(self) -> None:
        """SIGTERM to the worker process only, as Kubernetes sends it to the container's PID 1."""
        os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the whole group: the pod or host died."""
        assert self.process is not None
        self.process.kill()

    async def wait_exit(self, within_s: float) -> int:
        assert self.process is not None and self.process.proc is not None
        proc = self.process.proc
        return await asyncio.wait_for(asyncio.to_thread(proc.wait), within_s)

    def stop(self) -> None:
        if self.process is None or self.process.proc is None:
            return
        self.process.stop(timeout=20.0)
        # Whatever the worker started (job processes, the forkserver, espeak-ng) is in its group;
        # they follow the worker out on their own, SIGKILL is only the last resort.
        if self.leftovers(within_s=5.0):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.proc.pid, signal.SIGKILL)

    def leftovers(self, within_s: float = 5.0) -> bool:
        """Is any process of the worker's group still alive after ``within_s``? (Children exit, and
        are reaped by init, a moment after the worker: no event announces a whole group's end.)"""
        assert self.process is not None and self.process.proc is not None
        deadline = time.monotonic() + within_s
        while True:
            try:
                os.killpg(self.process.proc.pid, 0)
            except ProcessLookupError:
                return False
            if time.monotonic() > deadline:
                return True
            time.sleep(0.05)

    def log_tail(self, lines: int = 60) -> str:
        return self.process.log_tail(lines) if self.process else ""
