"""What every benchmark section shares: servers and processes on loopback, stand-in pools, a
listener that timestamps what it hears, percentiles, and the machine description.

The processes, stand-in pools and the listener are devstack's (the kit the tests use too), with
the bench's settings. Everything binds 127.0.0.1. Every process is started in its own process
group (ServerProcess) and stopped by the section that started it, in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import numpy as np
import yaml
from livekit import api as lkapi
from livekit import rtc
from nats.aio.client import Client as NATS

from devstack import orchestrator_process, standin_pool, worker_process
from devstack.listener import AUDIBLE_RMS, CONNECT_TIMEOUT_S, RoomListener
from devstack.livekit_server import LiveKitServer, find_livekit_server
from devstack.livekit_server import server_api as livekit_api
from devstack.nats_server import NatsServer, find_nats_server
from devstack.ports import free_tcp_port
from devstack.probe import http_ok
from devstack.process import ServerProcess, running
from orchestrator.service import OrchestratorService
from shared.config import SwitchboardConfig
from shared.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
AGENT = "ornina-avatar-agent"


# ------------------------------------------------------------------------------------------------
# numbers
# ------------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation; None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    vals = list(values)
    return {
        "n": len(vals),
        "p50": pct(vals, 50),
        "p90": pct(vals, 90),
        "p99": pct(vals, 99),
        "max": max(vals) if vals else None,
        "min": min(vals) if vals else None,
        "mean": statistics.fmean(vals) if vals else None,
    }


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        mem_gib = round(kb / 1024 / 1024, 1)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "loadavg_at_start": os.getloadavg(),
        "nats_server": _version([find_nats_server(), "--version"]),
        "livekit_server": Path(find_livekit_server()).name,
        "shared_vm_note": "shared 2-core VM: other engineers' test runs may share the CPUs",
    }


def _version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------
# servers
# ------------------------------------------------------------------------------------------------


def nats_server(work: Path, name: str = "nats") -> contextlib.AbstractContextManager[NatsServer]:
    return running(lambda n: NatsServer(work / f"{name}-{n}", name=name))


def livekit_server(work: Path, name: str = "livekit") -> contextlib.AbstractContextManager[LiveKitServer]:
    return running(lambda n: LiveKitServer(work / f"{name}-{n}", name=name, log_level="warn"))


@contextlib.asynccontextmanager
async def nats_client(url: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(url, max_reconnect_attempts=2, connect_timeout=3, name="bench")
    try:
        yield nc
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await nc.drain()


async def create_rooms(
    lk: LiveKitServer, names: Iterable[str], empty_timeout: int = 600, concurrency: int = 16
) -> dict[str, str]:
    """CreateRoom for each name (``concurrency`` at once), as a backend does before it announces a
    room (the orchestrator never lets a dispatch create one); returns name -> the room's sid."""
    limit = asyncio.Semaphore(concurrency)
    async with livekit_api(lk) as api:

        async def one(name: str) -> tuple[str, str]:
            async with limit:
                req = lkapi.CreateRoomRequest(name=name, empty_timeout=empty_timeout)
                return name, (await api.room.create_room(req)).sid

        return dict(await asyncio.gather(*(one(n) for n in names)))


async def delete_rooms(lk: LiveKitServer, names: Iterable[str], concurrency: int = 16) -> None:
    """DeleteRoom for each name, errors ignored (a room LiveKit already closed)."""
    limit = asyncio.Semaphore(concurrency)
    async with livekit_api(lk) as api:

        async def one(name: str) -> None:
            async with limit:
                with contextlib.suppress(Exception):
                    await api.room.delete_room(lkapi.DeleteRoomRequest(room=name))

        await asyncio.gather(*(one(n) for n in names))


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


# ------------------------------------------------------------------------------------------------
# configuration and processes
# ------------------------------------------------------------------------------------------------


# Orchestrator timings for sections whose pools are stand-ins (no worker joins, nobody speaks): the
# join/voice/assignment deadlines never fire, so only the dispatch path is measured.
STANDIN_TIMINGS: dict[str, object] = {
    "heartbeat_interval_s": 1.0,
    "assign_check_s": 3600,
    "join_deadline_s": 3600,
    "voice_deadline_s": 3600,
    "no_pool_deadline_s": 3600,
}


def config_dict(match: str = "ornina-*", **orchestrator: object) -> dict[str, Any]:
    """Two regions, one rule; orchestrator timings as given (the rest are the defaults)."""
    return {
        "default_region": "eu-central",
        "regions": {"eu-central": {"neighbours": ["us-east"]}, "us-east": {"neighbours": ["eu-central"]}},
        "rules": [{"name": "bench", "match": match, "agent": AGENT, "priority": 10}],
        "orchestrator": dict(orchestrator),
    }


def write_config(path: Path, match: str = "ornina-*", **orchestrator: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_dict(match, **orchestrator), sort_keys=False))
    return path


@dataclass
class Orchestrator(orchestrator_process.OrchestratorProcess):
    """devstack's `switchboard orchestrator` subprocess, logging at INFO (text) as in production."""

    log_level: str | None = "INFO"
    extra_env: dict[str, str] = field(default_factory=lambda: {"PYTHONPATH": str(REPO)})


def group_memory_kb(pgid: int) -> tuple[int, int, int]:
    """(processes, RSS kB, PSS kB) summed over a process group (/proc smaps_rollup)."""
    count = rss = pss = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            rollup = (entry / "smaps_rollup").read_text()
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
        fields = {ln.split(":")[0]: int(ln.split()[1]) for ln in rollup.splitlines()[1:] if ln.endswith("kB")}
        count += 1
        rss += fields.get("Rss", 0)
        pss += fields.get("Pss", 0)
    return count, rss, pss


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / ticks


# ------------------------------------------------------------------------------------------------
# stand-in pools (heartbeats only) and the Twirp stand-in for LiveKit
# ------------------------------------------------------------------------------------------------


@dataclass
class StandInPool(standin_pool.StandInPool):
    """devstack's heartbeating stand-in pool (no LiveKit worker behind it), with room for any load."""

    capacity: int = 100_000
    version: str = "bench"


@contextlib.asynccontextmanager
async def in_process_orchestrator(
    settings: Settings, config: SwitchboardConfig, pools: list[StandInPool]
) -> AsyncIterator[OrchestratorService]:
    """The stand-in ``pools`` beating, then an orchestrator replica in this process (so its spans
    and room index can be read directly), ready within 20 s; both stopped when the block ends."""
    for pool in pools:
        await pool.start()
    service = OrchestratorService(settings, config)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(20):
            while not service.readiness.ready:
                if task.done():
                    task.result()  # it failed to start: its error, not a timeout
                await asyncio.sleep(0.05)
        yield service
    finally:
        service.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
        for pool in pools:
            await pool.stop()


@dataclass
class StandIn:
    """bench/twirp_standin.py as a subprocess: answers LiveKit's Twirp API at once, timestamps arrivals."""

    workdir: Path
    port: int = field(default_factory=free_tcp_port)
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [PYTHON, "-m", "bench.twirp_standin", "--port", str(self.port)]
        self.process = ServerProcess(
            "twirp-standin", argv, self.workdir / "twirp-standin.log", env={"PYTHONPATH": str(REPO)}
        )
        self.process.start()
        self.process.wait_ready(lambda: http_ok(self.url + "/_bench/ping"), 20)

    def arrivals(self, prefix: str) -> dict[str, int]:
        """Room -> arrival time (ns, wall clock) of its first CreateDispatch."""
        data = http_json(f"{self.url}/_bench/arrivals?prefix={prefix}", timeout=30)
        return {str(k): int(v) for k, v in data.items()}

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


# ------------------------------------------------------------------------------------------------
# a listener that timestamps what it sees and hears
# ------------------------------------------------------------------------------------------------


class TimedListener(RoomListener):
    """A user in the room (devstack's listener) that times: when agents join (server's joined_at
    and when we saw them), and the wall time of the first audible frame (RMS >= AUDIBLE_RMS) from
    each participant. ``heard`` is set at the first audible frame."""

    def __init__(self, lk: LiveKitServer, room: str, identity: str = "listener") -> None:
        super().__init__(lk, room, identity)
        self.agent_seen: dict[str, float] = {}  # identity -> wall time we learnt of it
        self.agent_joined_ms: dict[str, int] = {}  # identity -> server's joined_at (ms)
        self.first_audible: dict[str, float] = {}  # identity -> wall time of first audible frame
        self.agent_in = asyncio.Event()
        self.room.on("participant_connected", self._on_participant)

    async def connect(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        await super().connect(timeout_s)
        for participant in self.room.remote_participants.values():
            self._on_participant(participant)

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return
        self.agent_seen.setdefault(participant.identity, time.time())
        joined = participant.joined_at
        if joined is not None:
            self.agent_joined_ms.setdefault(participant.identity, int(joined.timestamp() * 1000))
        self.agent_in.set()

    def on_frame(self, identity: str, rms: float) -> bool:
        if rms < AUDIBLE_RMS:
            return True
        self.first_audible.setdefault(identity, time.time())
        self.heard.set()
        # The first audible frame is all we time. Stop decoding (the subscription stays, so the
        # agent still has its listener): the instrument should not eat the CPU the agents under
        # test need on a 2-core machine.
        return False


def rounded(obj: Any, digits: int = 4) -> Any:
    """Floats rounded for the JSON file (nested)."""
    if isinstance(obj, float):
        return round(obj, digits) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v, digits) for v in obj]
    return obj


@dataclass
class Worker(worker_process.WorkerProcess):
    """devstack's pool worker process, run through ``bench.worker_shim`` (= ``switchboard worker``
    plus the bench knobs), with a short drain so sections end quickly."""

    agent: str = AGENT
    capacity: int = 4
    command: list[str] = field(default_factory=lambda: [PYTHON, "-m", "bench.worker_shim"])
    nats_startup_attempts: int = 3
    drain_grace_s: float = 2.0
    register_timeout_s: float = 90.0
    pythonpath: str | None = str(REPO)
