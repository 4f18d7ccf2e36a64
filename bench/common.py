"""What every benchmark section shares: servers and processes on loopback, stand-in pools, a
listener that timestamps what it hears, percentiles, and the machine description.

Everything binds 127.0.0.1. Every process is started in its own process group (ServerProcess) and
stopped by the section that started it, in a ``finally``.
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
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
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

from orchestrator.devstack.livekit_server import LiveKitServer, find_livekit_server
from orchestrator.devstack.nats_server import NatsServer, find_nats_server
from orchestrator.devstack.ports import free_tcp_port
from orchestrator.devstack.process import ServerProcess, start_with_fresh_ports
from shared import subjects
from shared.codec import encode
from shared.messages import PoolHeartbeat

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
AGENT = "ornina-avatar-agent"
# The listener's threshold, as in the tests: speech is far above it, decoded silence far below.
AUDIBLE_RMS = 0.01


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


@contextlib.contextmanager
def nats_server(work: Path, name: str = "nats") -> Iterator[NatsServer]:
    server = start_with_fresh_ports(lambda n: NatsServer(work / f"{name}-{n}", name=name))
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def livekit_server(work: Path, name: str = "livekit") -> Iterator[LiveKitServer]:
    server = start_with_fresh_ports(
        lambda n: LiveKitServer(work / f"{name}-{n}", name=name, log_level="warn")
    )
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def nats_client(url: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(url, max_reconnect_attempts=2, connect_timeout=3, name="bench")
    try:
        yield nc
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await nc.drain()


@contextlib.asynccontextmanager
async def livekit_api(lk: LiveKitServer) -> AsyncIterator[lkapi.LiveKitAPI]:
    api = lkapi.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret)
    try:
        yield api
    finally:
        await api.aclose()


def http_status(url: str, timeout: float = 0.5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError):
        return 0


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


# ------------------------------------------------------------------------------------------------
# configuration and processes
# ------------------------------------------------------------------------------------------------


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
class Orchestrator:
    """`switchboard orchestrator --config` as a subprocess in its own process group."""

    workdir: Path
    config: Path
    nats_url: str
    livekit_url: str
    api_key: str
    api_secret: str
    name: str = "orchestrator"
    log_level: str = "INFO"
    http_port: int = field(default_factory=free_tcp_port)
    process: ServerProcess | None = None

    def start(self, timeout: float = 30.0) -> None:
        env = {
            "NATS_URL": self.nats_url,
            "NATS_STARTUP_ATTEMPTS": "3",
            "LIVEKIT_URL": self.livekit_url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
            "SWITCHBOARD_HTTP_PORT": str(self.http_port),
            "SWITCHBOARD_LOG_LEVEL": self.log_level,
            "PYTHONPATH": str(REPO),
        }
        argv = [SWITCHBOARD, "orchestrator", "--config", str(self.config)]
        self.process = ServerProcess(self.name, argv, self.workdir / f"{self.name}.log", env=env)
        self.process.start()
        self.process.wait_ready(self.ready, timeout)

    def ready(self) -> bool:
        return http_status(f"http://127.0.0.1:{self.http_port}/readyz") == 200

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.pid is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=15.0)


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
class StandInPool:
    """A pool's heartbeats on real NATS, as its workers would send them (no LiveKit worker behind it)."""

    nc: NATS
    pool: str
    region: str = "eu-central"
    capacity: int = 100_000
    interval: float = 1.0
    _task: asyncio.Task[None] | None = None
    _seq: int = 0

    async def beat(self) -> None:
        self._seq += 1
        hb = PoolHeartbeat(
            pool=self.pool,
            agent=AGENT,
            region=self.region,
            agent_name=subjects.pool_agent_name(AGENT, self.pool),
            worker=f"{self.pool}-w1",
            capacity=self.capacity,
            active=0,
            load=0.0,
            version="bench",
            seq=self._seq,
            at=datetime.now(UTC),
        )
        await self.nc.publish(subjects.pool_heartbeat(self.pool), encode(hb))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.beat()

    async def start(self) -> None:
        await self.beat()
        await self.nc.flush()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


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
        self.process.wait_ready(lambda: http_status(self.url + "/_bench/ping") == 200, 20)

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


class TimedListener:
    """A user in the room (LiveKit rtc SDK): when agents join (server's joined_at and when we saw
    them), and the wall time of the first audible frame (RMS >= 0.01) from each participant."""

    def __init__(self, lk: LiveKitServer, room: str, identity: str = "listener") -> None:
        self._lk = lk
        self.room_name = room
        self._identity = identity
        self.room = rtc.Room()
        self.agent_seen: dict[str, float] = {}  # identity -> wall time we learnt of it
        self.agent_joined_ms: dict[str, int] = {}  # identity -> server's joined_at (ms)
        self.first_audible: dict[str, float] = {}  # identity -> wall time of first audible frame
        self.heard = asyncio.Event()
        self.agent_in = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []

    async def connect(self, within_s: float = 20.0) -> None:
        token = (
            lkapi.AccessToken(self._lk.api_key, self._lk.api_secret)
            .with_identity(self._identity)
            .with_grants(lkapi.VideoGrants(room_join=True, room=self.room_name))
            .to_jwt()
        )
        self.room.on("track_subscribed", self._on_track)
        self.room.on("participant_connected", self._on_participant)
        async with asyncio.timeout(within_s):
            await self.room.connect(self._lk.ws_url, token)
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

    def _on_track(self, track: rtc.Track, _pub: Any, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            stream = rtc.AudioStream(track)
            self._readers.append(asyncio.create_task(self._read(stream, participant.identity)))

    async def _read(self, stream: rtc.AudioStream, identity: str) -> None:
        try:
            async for event in stream:
                samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64) / 32768.0
                rms = math.sqrt(float(np.mean(samples**2))) if samples.size else 0.0
                if rms >= AUDIBLE_RMS:
                    self.first_audible.setdefault(identity, time.time())
                    self.heard.set()
                    # The first audible frame is all we time. Stop decoding (the subscription
                    # stays, so the agent still has its listener): the instrument should not eat
                    # the CPU the agents under test need on a 2-core machine.
                    return
        finally:
            await stream.aclose()

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.room.disconnect()


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
class Worker:
    """A pool worker process (``bench.worker_shim`` = ``switchboard worker`` plus the bench knobs),
    in its own process group; ready once its /readyz says it is registered with LiveKit."""

    lk: LiveKitServer
    nats_url: str
    workdir: Path
    pool: str
    region: str = "eu-central"
    agent: str = AGENT
    capacity: int = 4
    env: dict[str, str] = field(default_factory=dict)
    health_port: int = field(default_factory=free_tcp_port)
    process: ServerProcess | None = None

    def start(self, timeout: float = 90.0) -> None:
        argv = [
            PYTHON,
            "-m",
            "bench.worker_shim",
            "worker",
            "--agent",
            self.agent,
            "--region",
            self.region,
            "--pool",
            self.pool,
            "--capacity",
            str(self.capacity),
            "--health-port",
            str(self.health_port),
        ]
        env = {
            "NATS_URL": self.nats_url,
            "NATS_STARTUP_ATTEMPTS": "3",
            "LIVEKIT_URL": self.lk.ws_url,
            "LIVEKIT_API_KEY": self.lk.api_key,
            "LIVEKIT_API_SECRET": self.lk.api_secret,
            "SWITCHBOARD_CONFIG": str(self.workdir / "absent-switchboard.yaml"),
            "SWITCHBOARD_WORKER_DRAIN_GRACE_S": "2",
            "PYTHONPATH": str(REPO),
            **self.env,
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = ServerProcess(
            f"worker-{self.pool}", argv, self.workdir / f"worker-{self.pool}.log", env=env
        )
        self.process.start()
        self.process.wait_ready(
            lambda: http_status(f"http://127.0.0.1:{self.health_port}/readyz") == 200, timeout
        )

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.pid is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL to the whole group, as a host or pod dying would."""
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        if self.process is None or self.process.proc is None:
            return
        self.process.stop(timeout=15.0)
        # Job threads, espeak-ng and the like are in the group: make sure none is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.proc.pid, 9)
