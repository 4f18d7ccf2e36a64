"""The drills' stack: real nats-server (one node or a 3-node cluster), real livekit-server, real
orchestrator replicas and worker pools as subprocesses, an OTLP sink catching every span they
export, and the measurements a drill reports (from KV records and LiveKit's participant lists).

Definitions used in every drill and in docs/drills/REPORT.md:

- *sent*: room events JetStream acknowledged (a publish is retried with the same ``Nats-Msg-Id``
  until acked, within a bound);
- *live*: the room's record is ``joined`` or ``speaking`` (speaking needs a listener; most drill
  rooms have none, a few have one and must reach ``speaking``);
- *lost*: sent but neither live nor terminal with a reason at the end;
- *double agents*: rooms where LiveKit lists more than one agent participant, either at some
  point during the run for longer than the removal bound (``doubles.REMOVAL_BOUND_S``, 3 s;
  sampled every 0.5 s by ``doubles.DoubleSampler``) or still at the end (``settle_doubles``);
- *overlaps*: spells of two agents in a room within the removal bound (an old agent being
  removed next to its replacement): reported, with the longest, but not counted as double agents.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from livekit import api as lkapi
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from devstack.ports import free_tcp_port
from devstack.process import ServerProcess, start_with_fresh_ports
from orchestrator.records import RoomRecord, RoomState
from orchestrator.store import RoomStore, open_bucket
from shared import bus
from shared.messages import RoomCreated
from shared.settings import NatsSettings
from tests.drills.doubles import REMOVAL_BOUND_S, DoubleSampler
from tests.orchestratorkit import create_livekit_room
from tests.workerkit import SWITCHBOARD, Listener, WorkerProcess, agents_in_room

AGENT = "ornina-avatar-agent"
DRILL_ENTRYPOINT = "tests.drills.drill_agent:entrypoint"
LIVE = frozenset({RoomState.JOINED, RoomState.SPEAKING})
TERMINAL_WITH_REASON = frozenset({RoomState.FAILED, RoomState.IGNORED, RoomState.ENDED})
REPORT_ENV = "SWITCHBOARD_DRILL_REPORT"

DRILL_ORCHESTRATOR = {
    "heartbeat_interval_s": 1.0,
    "dead_after_missed_beats": 3,
    # A 200-room burst on 2 cores: agents join within seconds to tens of seconds.
    "join_deadline_s": 60,
    # Most drill rooms have no listener, so they never speak; they count as live when joined.
    "voice_deadline_s": 600,
    "dispatch_deadline_s": 5,
    "assign_check_s": 20,
    "sweep_interval_s": 0.25,
}


def drill_config(**orchestrator: Any) -> dict[str, Any]:
    return {
        "default_region": "eu-central",
        "regions": {"eu-central": {"neighbours": ["us-east"]}, "us-east": {"neighbours": ["eu-central"]}},
        "rules": [{"name": "ornina", "match": "ornina-*", "agent": AGENT, "priority": 10}],
        "orchestrator": {**DRILL_ORCHESTRATOR, **orchestrator},
    }


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------


@dataclass
class DrillResult:
    drill: str
    size: str  # "fast" (default test run) or "full" (make drills)
    rooms_sent: int = 0
    live_at_end: int = 0
    speaking_at_end: int = 0
    listener_rooms: int = 0
    failed: int = 0
    lost: int = 0
    # Rooms with two agents longer than REMOVAL_BOUND_S during the run, or at the end (both below).
    double_agents: int = 0
    double_agents_at_end: int = 0  # the end-of-run check alone (settle_doubles)
    overlaps: int = 0  # spells of two agents within REMOVAL_BOUND_S (not double agents)
    max_overlap_s: float | None = None
    samples: int = 0  # DoubleSampler samples taken during the run
    lists_per_sample_max: int = 0  # ListParticipants calls in the largest sample (plus one ListRooms)
    rooms_without_agent: int = 0
    recovery_s: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)  # DoubleReport.to_json(): the details

    @property
    def recovery_p50(self) -> float | None:
        return round(statistics.median(self.recovery_s), 2) if self.recovery_s else None

    @property
    def recovery_max(self) -> float | None:
        return round(max(self.recovery_s), 2) if self.recovery_s else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["recovery_s"] = [round(x, 3) for x in self.recovery_s]
        data["recovery_p50_s"] = self.recovery_p50
        data["recovery_max_s"] = self.recovery_max
        return data

    def summary(self) -> str:
        sampled = self.sampling
        overlap = f" (max {self.max_overlap_s}s)" if self.max_overlap_s is not None else ""
        return (
            f"{self.drill} [{self.size}]: sent {self.rooms_sent}, live {self.live_at_end} "
            f"(speaking {self.speaking_at_end}/{self.listener_rooms} listener rooms), failed {self.failed}, "
            f"lost {self.lost}, double agents {self.double_agents} ({self.double_agents_at_end} at end), "
            f"overlaps <= {REMOVAL_BOUND_S:g}s {self.overlaps}{overlap}, "
            f"{self.samples} samples (<= 1+{self.lists_per_sample_max} calls each, "
            f"{sampled.get('sample_ms_p50')}/{sampled.get('sample_ms_max')} ms p50/max, "
            f"{sampled.get('errors')} errors, rooms unlisted <= {sampled.get('max_unlisted_s')}s), "
            f"no agent {self.rooms_without_agent}, "
            f"recovery p50 {self.recovery_p50}s max {self.recovery_max}s, {self.duration_s:.1f}s; "
            f"{'; '.join(self.notes)} {self.extra}"
            + (f" doubles seen: {sampled['doubles']}" if sampled.get("doubles") else "")
        )


def save_result(result: DrillResult) -> None:
    """Print the result; with $SWITCHBOARD_DRILL_REPORT set (make drills), append it to results.jsonl."""
    print("\n" + result.summary())
    target = os.environ.get(REPORT_ENV)
    if target:
        path = Path(target) / "results.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(result.to_json()) + "\n")


# ----------------------------------------------------------------------------------------------
# span sink
# ----------------------------------------------------------------------------------------------


class OtlpSink:
    """Answers OTLP/HTTP exports and keeps the raw bodies, to search spans for secrets."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _take(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    async def __aenter__(self) -> OtlpSink:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._take)
        app.router.add_post("/v1/metrics", self._take)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_tcp_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# ----------------------------------------------------------------------------------------------
# the stack
# ----------------------------------------------------------------------------------------------


@dataclass
class Orchestrator:
    name: str
    process: ServerProcess
    http_port: int

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=0.5) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False


class Stack:
    """One drill's servers and processes; everything it starts is stopped on exit."""

    def __init__(
        self, root: Path, *, cluster: bool = False, nats_extra: str = "", webhook_urls: Iterable[str] = ()
    ) -> None:
        self.root = root
        self.cluster = cluster
        self.nats_extra = nats_extra
        self.webhook_urls = list(webhook_urls)  # livekit-server's webhook targets (none by default)
        self.nodes: list[NatsServer] = []
        self.livekit: LiveKitServer | None = None
        self.sink = OtlpSink()
        self.orchestrators: list[Orchestrator] = []
        self.workers: list[WorkerProcess] = []
        self.config_path = root / "switchboard.yaml"
        self.secrets: list[str] = []
        self.nats_env: dict[str, str] = {}  # credentials for the orchestrators (auth drill)
        self.client_settings: NatsSettings | None = None
        self.client_auth: dict[str, Any] = {}  # NatsSettings fields for the drill's own client
        self.ingest: ServerProcess | None = None
        self.ingest_port = 0
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.kv: KeyValue | None = None
        self.lk: lkapi.LiveKitAPI | None = None
        # The double-agent sampler runs from start() to finish() (or stop()), owned by _running.
        self.sampler: DoubleSampler | None = None
        self._running = contextlib.AsyncExitStack()

    # -- servers ---------------------------------------------------------------------------------

    @property
    def nats_url(self) -> str:
        return ",".join(n.url for n in self.nodes)

    @property
    def replicas(self) -> int:
        return 3 if self.cluster else 1

    async def start(self, config: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))
        await self.sink.__aenter__()
        if self.cluster:
            ports = [free_tcp_port() for _ in range(3)]
            self.nodes = [
                NatsServer(
                    self.root / "nats",
                    name=f"n{i + 1}",
                    cluster_name="drill",
                    cluster_port=ports[i],
                    cluster_routes=ports,
                    extra_config=self.nats_extra,
                )
                for i in range(3)
            ]
            for node in self.nodes:
                node.start(wait=False)
            for node in self.nodes:
                await asyncio.to_thread(node.wait_ready, 30.0)
        else:
            node = await asyncio.to_thread(
                start_with_fresh_ports,
                # The same directory every time: drill 7 puts accounts.conf there.
                lambda _: NatsServer(self.root / "nats", extra_config=self.nats_extra),
            )
            self.nodes = [node]
        self.livekit = await asyncio.to_thread(
            start_with_fresh_ports,
            lambda n: LiveKitServer(self.root / f"livekit-{n}", webhook_urls=self.webhook_urls),
        )
        self.secrets.append(self.livekit.api_secret)
        self.lk = lkapi.LiveKitAPI(self.livekit.http_url, self.livekit.api_key, self.livekit.api_secret)
        await self.connect_client()
        self.sampler = await self._running.enter_async_context(DoubleSampler(self.lk))

    async def connect_client(self, settings: NatsSettings | None = None) -> None:
        self.client_settings = (
            settings or self.client_settings or NatsSettings(url=self.nats_url, **self.client_auth)
        )
        self.nc = await bus.connect(self.client_settings, "drill-observer")
        self.js = self.nc.jetstream(timeout=10)
        # The streams and the bucket, created here so the first orchestrators do not race for them
        # (in a fresh cluster the meta leader may take a few seconds: retried within a bound).
        async with asyncio.timeout(60):
            while True:
                try:
                    await bus.ensure_streams(self.js, self.replicas)
                    self.kv = await open_bucket(self.js, self.replicas)
                    break
                except Exception as err:
                    print(f"streams not ready yet: {err!r}")
                    await asyncio.sleep(0.5)

    async def stop(self) -> None:
        await self._running.aclose()  # the sampler first: it uses self.lk
        for orch in self.orchestrators:
            await asyncio.to_thread(orch.process.stop, 10.0)
        if self.ingest is not None:
            await asyncio.to_thread(self.ingest.stop, 10.0)
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in self.workers))
        if self.lk is not None:
            await self.lk.aclose()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(3):
                    await self.nc.close()
        if self.livekit is not None:
            await asyncio.to_thread(self.livekit.stop)
        for node in self.nodes:
            await asyncio.to_thread(node.stop)
        await self.sink.__aexit__()
        left = [w.pool for w in self.workers if w.process and w.leftovers(within_s=5.0)]
        assert not left, f"processes left behind by workers of {left}"

    # -- processes -------------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        assert self.livekit is not None
        return {
            "NATS_URL": self.nats_url,
            "NATS_STREAM_REPLICAS": str(self.replicas),
            "NATS_STARTUP_ATTEMPTS": "3",
            "LIVEKIT_API_KEY": self.livekit.api_key,
            "LIVEKIT_API_SECRET": self.livekit.api_secret,
            "SWITCHBOARD_CONFIG": str(self.config_path),
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.sink.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "1000",
            "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        }

    async def start_orchestrators(
        self, count: int, *, livekit_url: str | None = None, env: dict[str, str] | None = None
    ) -> list[Orchestrator]:
        assert self.livekit is not None
        started: list[Orchestrator] = []
        for _ in range(count):
            name = f"orchestrator-{len(self.orchestrators) + 1}"
            port = free_tcp_port()
            proc_env = {
                **self.base_env(),
                **self.nats_env,
                "LIVEKIT_URL": livekit_url or self.livekit.http_url,
                "LIVEKIT_REQUEST_TIMEOUT_S": "5",
                "SWITCHBOARD_HTTP_PORT": str(port),
                "OTEL_SERVICE_NAME": f"switchboard-{name}",
                **(env or {}),
            }
            proc = ServerProcess(
                name,
                [SWITCHBOARD, "orchestrator", "--config", str(self.config_path)],
                self.root / "logs" / f"{name}.log",
                env=proc_env,
            )
            proc.start()
            orch = Orchestrator(name, proc, port)
            self.orchestrators.append(orch)
            started.append(orch)
        for orch in started:
            await asyncio.to_thread(orch.process.wait_ready, orch.ready, 60.0)
        return started

    def node_of(self, room: str) -> LiveKitServer:
        """The LiveKit node a user of ``room`` joins through (the stack's one node)."""
        assert self.livekit is not None
        return self.livekit

    def pool_place(self, region: str) -> tuple[LiveKitServer, str, dict[str, str]]:
        """Where a pool of ``region`` registers and reports: the stack's LiveKit and NATS (one
        region's stack), and what its workers' environment adds."""
        assert self.livekit is not None
        return self.livekit, self.nats_url, {}

    async def start_pool(
        self,
        pool: str,
        region: str,
        *,
        processes: int = 1,
        capacity: int = 8,
        env: dict[str, str] | None = None,
        executor: str = "process",
    ) -> list[WorkerProcess]:
        """``executor``: ``process`` isolates each job (a livekit rtc FFI panic, which SIGTERMs its
        process, then costs one job); ``thread`` (the worker's default) is the only one light enough
        for 200 jobs on 2 cores, and a panic there takes the whole worker process down."""
        livekit, nats_url, place_env = self.pool_place(region)
        started = [
            WorkerProcess(
                livekit,
                nats_url,
                self.root / "workers" / f"{pool}-{i + 1}",
                pool,
                agent=AGENT,
                region=region,
                capacity=capacity,
                extra_args=["--entrypoint", DRILL_ENTRYPOINT, "--executor", executor],
                extra_env={
                    "OTEL_EXPORTER_OTLP_ENDPOINT": self.sink.endpoint,
                    "OTEL_SERVICE_NAME": f"switchboard-worker-{pool}",
                    "OTEL_BSP_SCHEDULE_DELAY": "1000",
                    **place_env,
                    **(env or {}),
                },
            )
            for i in range(processes)
        ]
        self.workers.extend(started)
        await asyncio.gather(*(asyncio.to_thread(w.start) for w in started))
        return started

    async def start_ingest(self, env: dict[str, str] | None = None) -> str:
        """``switchboard ingest`` (the webhook endpoint); returns its webhook URL."""
        self.ingest_port = free_tcp_port()
        self.ingest = ServerProcess(
            "ingest",
            [SWITCHBOARD, "ingest", "--config", str(self.config_path), "--port", str(self.ingest_port)],
            self.root / "logs" / "ingest.log",
            env={**self.base_env(), "OTEL_SERVICE_NAME": "switchboard-ingest", **(env or {})},
        )
        self.ingest.start()
        url = f"http://127.0.0.1:{self.ingest_port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=0.5) as r:
                    return bool(r.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        await asyncio.to_thread(self.ingest.wait_ready, ready, 60.0)
        return url + "/webhook"

    # -- rooms -----------------------------------------------------------------------------------

    async def publish(self, room: str, region: str = "eu-central", within_s: float = 60.0) -> float:
        """Create the room in LiveKit (as a backend does; a dispatch never creates one), then
        publish its event, with the room's sid, until JetStream acks it (same Nats-Msg-Id on every
        retry); returns the wall time it was accepted."""
        assert self.js is not None and self.lk is not None
        deadline = time.monotonic() + within_s
        sid = await create_livekit_room(self.lk, room)
        while True:
            try:
                await bus.publish_room_created(self.js, RoomCreated(room=room, sid=sid, region=region))
                return time.time()
            except Exception as err:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{room}: not accepted by JetStream within {within_s}s: {err!r}"
                    ) from None
                await asyncio.sleep(0.2)  # NATS is down or electing a leader: bounded retry

    async def publish_all(self, rooms: Iterable[str], region: str = "eu-central") -> dict[str, float]:
        accepted: dict[str, float] = {}
        for room in rooms:
            accepted[room] = await self.publish(room, region)
        return accepted

    def store_of(self, room: str) -> RoomStore:
        """The bucket that holds ``room``'s record (the stack's one rooms bucket)."""
        assert self.kv is not None
        return RoomStore(self.kv)

    async def records(self, rooms: Iterable[str]) -> dict[str, RoomRecord | None]:
        out: dict[str, RoomRecord | None] = {}
        for room in rooms:
            try:
                got = await self.store_of(room).get(room)
            except Exception:
                got = None
            out[room] = got.record if got else None
        return out

    async def wait_settled(
        self, rooms: list[str], within_s: float, speaking: Iterable[str] = ()
    ) -> dict[str, RoomRecord | None]:
        """Until every room is live (``speaking`` for the listener rooms) or terminal, or the time
        is up. Woken by the bucket's watch; a full re-read when it is quiet (or lost in an outage)."""
        assert self.kv is not None
        settled = settled_check(speaking)
        deadline = time.monotonic() + within_s
        records = await self.records(rooms)
        watcher = None
        try:
            while True:
                pending = [r for r in rooms if not settled(r, records.get(r))]
                if not pending or time.monotonic() > deadline:
                    return records
                try:
                    if watcher is None:
                        watcher = await self.kv.watchall()
                    entry = await watcher.updates(timeout=2.0)  # type: ignore[no-untyped-call]
                    if entry is not None and entry.value:
                        with contextlib.suppress(Exception):
                            rec = RoomRecord.model_validate_json(entry.value)
                            records[rec.room] = rec
                        continue
                except TimeoutError:
                    pass
                except Exception:
                    watcher = None  # lost with the server: take a new one
                records.update(await self.records(pending))
        finally:
            if watcher is not None:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]

    async def agents(self, room: str) -> list[Any]:
        assert self.lk is not None
        return await agents_in_room(self.lk, room)

    async def agent_counts(self, rooms: Iterable[str]) -> dict[str, int]:
        limit = asyncio.Semaphore(16)

        async def one(room: str) -> tuple[str, int]:
            async with limit:
                try:
                    return room, len(await self.agents(room))
                except Exception:
                    return room, 0

        return dict(await asyncio.gather(*(one(r) for r in rooms)))

    async def settle_doubles(self, rooms: list[str], within_s: float = 30.0) -> dict[str, int]:
        """LiveKit drops a SIGKILLed agent's participant only after its own timeouts; a room may
        list a dead agent next to the new one for a while. Count until the lists settle or the time
        is up: a room that still lists two agents then is a double agent."""
        deadline = time.monotonic() + within_s
        counts = await self.agent_counts(rooms)
        while any(c > 1 for c in counts.values()) and time.monotonic() < deadline:
            await asyncio.sleep(1.0)  # LiveKit announces nothing to a server-API client: poll, bounded
            counts.update(await self.agent_counts([r for r, c in counts.items() if c > 1]))
        return counts

    async def finish(
        self,
        result: DrillResult,
        rooms: list[str],
        records: dict[str, RoomRecord | None],
        listener_rooms: Iterable[str] = (),
    ) -> DrillResult:
        listeners = set(listener_rooms)
        result.rooms_sent = len(rooms)
        result.listener_rooms = len(listeners)
        live = [r for r in rooms if (rec := records.get(r)) is not None and rec.state in LIVE]
        result.live_at_end = len(live)
        result.speaking_at_end = sum(
            1 for r in listeners if (rec := records.get(r)) is not None and rec.state == RoomState.SPEAKING
        )
        result.failed = sum(
            1 for r in rooms if (rec := records.get(r)) is not None and rec.state in TERMINAL_WITH_REASON
        )
        lost = [
            r
            for r in rooms
            if r not in live
            and not ((rec := records.get(r)) and rec.state in TERMINAL_WITH_REASON and rec.reason)
        ]
        result.lost = len(lost)
        if lost:
            result.extra["lost_rooms"] = {
                r: (records[r].state.value if records.get(r) else None)  # type: ignore[union-attr]
                for r in lost[:20]
            }
        counts = await self.settle_doubles(live)  # the sampler goes on meanwhile
        at_end = {r for r, c in counts.items() if c > 1}
        result.double_agents_at_end = len(at_end)
        result.double_agents = len(at_end)
        if self.sampler is not None:
            seen = await self.sampler.stop()
            result.double_agents = len(at_end | seen.double_rooms)
            result.overlaps = len(seen.overlaps)
            result.max_overlap_s = seen.max_overlap_s
            result.samples = seen.samples
            result.lists_per_sample_max = seen.lists_per_sample_max
            result.sampling = seen.to_json()
        result.rooms_without_agent = sum(1 for c in counts.values() if c == 0)
        leaks = self.scan_secrets()
        result.extra["secret_leaks"] = leaks
        return result

    # -- secrets ---------------------------------------------------------------------------------

    def scan_secrets(self) -> list[str]:
        """Every log file of the drill and every span body the sink received, searched for every
        secret in force. Returns "<secret #n> in <where>" (never the secret itself)."""
        found: list[str] = []
        needles = [(i, s.encode()) for i, s in enumerate(self.secrets) if len(s) >= 8]
        for path in sorted(self.root.rglob("*.log")):
            data = path.read_bytes()
            found += [f"secret #{i} in {path.name}" for i, s in needles if s in data]
        for n, body in enumerate(self.sink.bodies):
            found += [f"secret #{i} in OTLP export {n}" for i, s in needles if s in body]
        return found


@contextlib.asynccontextmanager
async def stack(
    root: Path, config: dict[str, Any], kind: type[Stack] | None = None, **kwargs: Any
) -> AsyncIterator[Stack]:
    """A started ``kind`` of stack (one region's, by default), stopped at the end."""
    s = (kind or Stack)(root, **kwargs)
    try:
        await s.start(config)
        yield s
    finally:
        await s.stop()


@contextlib.asynccontextmanager
async def listeners(s: Stack, rooms: Iterable[str]) -> AsyncIterator[list[Listener]]:
    """A listener (a user with the rtc SDK) in each room, joined through the room's LiveKit node."""
    joined: list[Listener] = []
    try:
        for room in rooms:
            listener = Listener(s.node_of(room), room, identity=f"listener-{room}")
            await listener.__aenter__()
            joined.append(listener)
        yield joined
    finally:
        for listener in joined:
            with contextlib.suppress(Exception):
                await listener.__aexit__(None, None, None)


def settled_check(speaking: Iterable[str] = ()) -> Callable[[str, RoomRecord | None], bool]:
    """Whether a room is settled: terminal with a reason, or live (``speaking`` for the rooms
    with a listener)."""
    must_speak = set(speaking)

    def settled(room: str, rec: RoomRecord | None) -> bool:
        if rec is None:
            return False
        if rec.state in TERMINAL_WITH_REASON:
            return True
        return rec.state == RoomState.SPEAKING if room in must_speak else rec.state in LIVE

    return settled


def live_at(rec: RoomRecord | None) -> float | None:
    """Wall time the room's current attempt went live (joined, or speaking without a joined report)."""
    if rec is None or rec.state not in LIVE:
        return None
    return rec.joined_at or rec.voice_at


def recoveries(records: dict[str, RoomRecord | None], rooms: Iterable[str], since: float) -> list[float]:
    return [max(0.0, t - since) for r in rooms if (t := live_at(records.get(r))) is not None]
