"""`switchboard dev`: the whole chain on one machine, for a newcomer, in one command.

nats-server and livekit-server (built first if missing), the ingest as livekit-server's webhook
target, the orchestrator, two regional pools (eu-central, us-east) — each a real process in its
own process group with its log in the data dir — then demo rooms, each with a listener joined
through the LiveKit rtc SDK, so LiveKit fires room_started, the agents are dispatched, join, and
are heard. Then the live status table until Ctrl-C, which stops every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from livekit import api as lk
from nats.aio.client import Client as NATS
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from devstack.commands import switchboard_command
from devstack.dev_config import DEMO_AGENT, DEV_POOLS, demo_rooms, dev_config
from devstack.dev_state import DevState, write_state
from devstack.jaeger import JaegerServer, find_jaeger
from devstack.listener import RoomListener
from devstack.livekit_server import LiveKitServer, find_livekit_server
from devstack.nats_server import NatsServer
from devstack.ports import free_tcp_port
from devstack.probe import http_ok
from devstack.process import MissingBinaryError, ServerProcess, start_with_fresh_ports
from devstack.worker_process import worker_args
from orchestrator.ops.census import ask_orchestrators
from orchestrator.ops.live import LiveView
from orchestrator.ops.status import render
from orchestrator.records import RoomRecord, RoomState
from shared import bus
from shared.config import SwitchboardConfig, parse_config
from shared.settings import NatsSettings

ALL_SPEAKING = "all demo rooms speaking"
WORKER_READY_TIMEOUT_S = 120.0
SPEAKING_TIMEOUT_S = 120.0
ROOM_STEP_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class DevOptions:
    data_dir: Path
    rooms: int = 3
    capacity: int = 4
    trace_ui_url: str | None = None
    # Stop after every demo room speaks (CI smoke runs) instead of showing the table until Ctrl-C.
    exit_when_speaking: bool = False
    # Start Jaeger (when scripts/install-jaeger built it) and send every process's traces there.
    jaeger: bool = True


@dataclass
class DevStack:
    options: DevOptions
    console: Console
    nats: NatsServer | None = None
    livekit: LiveKitServer | None = None
    jaeger: JaegerServer | None = None
    processes: dict[str, ServerProcess] = field(default_factory=dict)
    workers: dict[str, list[ServerProcess]] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def data_dir(self) -> Path:
        return self.options.data_dir

    def say(self, message: str, style: str = "") -> None:
        stamp = f"[{time.monotonic() - self.started_at:6.1f}s] "
        self.console.print(Text(stamp + message, style=style), soft_wrap=True)

    # -- start -------------------------------------------------------------------------------------

    async def start_servers(self, ingest_port: int) -> None:
        await asyncio.to_thread(ensure_livekit_server, self.say)
        webhook = f"http://127.0.0.1:{ingest_port}/webhook"
        async with asyncio.TaskGroup() as tg:
            nats_started = tg.create_task(
                asyncio.to_thread(start_with_fresh_ports, lambda n: NatsServer(self.data_dir / f"nats-{n}"))
            )
            livekit_started = tg.create_task(
                asyncio.to_thread(
                    start_with_fresh_ports,
                    lambda n: LiveKitServer(self.data_dir / f"livekit-{n}", webhook_urls=[webhook]),
                )
            )
        self.nats, self.livekit = nats, livekit = nats_started.result(), livekit_started.result()
        self.say(f"nats-server {nats.url}, livekit-server {livekit.ws_url}", "green")

    def start_jaeger(self) -> JaegerServer | None:
        try:
            find_jaeger()
        except MissingBinaryError:
            self.say(
                "traces: Jaeger is not built (scripts/install-jaeger builds it); running without", "yellow"
            )
            return None
        self.jaeger = JaegerServer(self.data_dir / "jaeger")
        self.jaeger.start()
        self.say(
            f"traces: Jaeger UI at {self.jaeger.query_url} "
            "(services switchboard-orchestrator, -worker, -ingest)",
            "green",
        )
        return self.jaeger

    def child_env(self, config_path: Path) -> dict[str, str]:
        assert self.nats and self.livekit
        # The API secret goes through the environment only: never argv, never printed.
        return {
            "NATS_URL": self.nats.url,
            "LIVEKIT_URL": self.livekit.ws_url,
            "LIVEKIT_API_KEY": self.livekit.api_key,
            "LIVEKIT_API_SECRET": self.livekit.api_secret,
            "SWITCHBOARD_CONFIG": str(config_path),
            "SWITCHBOARD_LOG_LEVEL": os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"),
            **(
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": self.jaeger.otlp_endpoint,
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                    # Jaeger takes traces only; metrics stay on each process's /metrics.
                    "OTEL_METRICS_EXPORTER": "none",
                }
                if self.jaeger
                else {}
            ),
        }

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> ServerProcess:
        proc = ServerProcess(
            name, [*switchboard_command(), *args], self.data_dir / "logs" / f"{name}.log", env
        )
        proc.start()
        return proc

    async def start_switchboard(self, config_path: Path, ingest_port: int) -> None:
        env = self.child_env(config_path)
        ingest = self.processes["ingest"] = self.spawn("ingest", ["ingest", "--port", str(ingest_port)], env)
        self.processes["orchestrator"] = self.spawn("orchestrator", ["orchestrator"], env)
        health: list[tuple[ServerProcess, str]] = [(ingest, f"http://127.0.0.1:{ingest_port}/healthz")]
        for p in DEV_POOLS:
            port = free_tcp_port()
            argv = worker_args(DEMO_AGENT, p.region, p.pool, self.options.capacity, port)
            worker = self.spawn(f"worker-{p.pool}", argv, env)
            self.workers[p.pool] = [worker]
            health.append((worker, f"http://127.0.0.1:{port}/healthz"))
        self.say("waiting for the ingest and both pools to register with LiveKit (first start is slowest)")
        async with asyncio.TaskGroup() as tg:
            for proc, url in health:
                probe = functools.partial(http_ok, url)
                tg.create_task(asyncio.to_thread(proc.wait_ready, probe, WORKER_READY_TIMEOUT_S))
        self.say(f"ingest, orchestrator and pools {', '.join(self.workers)} running", "green")

    def write_files(self, config_path: Path, ingest_port: int) -> None:
        assert self.nats and self.livekit
        state = DevState(
            dev_pid=os.getpid(),
            data_dir=str(self.data_dir),
            nats_url=self.nats.url,
            livekit_url=self.livekit.ws_url,
            ingest_url=f"http://127.0.0.1:{ingest_port}/webhook",
            pools={pool: [p.pid for p in procs if p.pid] for pool, procs in self.workers.items()},
        )
        state_path = write_state(self.data_dir, state)
        env = {**self.child_env(config_path), "SWITCHBOARD_DEV_STATE": str(state_path)}
        env_file = self.data_dir / "dev.env"
        # Holds the LiveKit API secret: owner-only, and its content is never printed.
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"export {k}={_shell_quote(v)}\n" for k, v in env.items())

    # -- demo rooms --------------------------------------------------------------------------------

    async def create_room(self, api: lk.LiveKitAPI, room: str, region: str) -> RoomListener:
        assert self.livekit
        # Room metadata carries the region hint; creating the room fires room_started.
        req = lk.CreateRoomRequest(name=room, metadata=json.dumps({"region": region}), empty_timeout=300)
        async with asyncio.timeout(10):
            await api.room.create_room(req)
        listener = RoomListener(self.livekit, room, f"listener-{room}")
        await listener.connect()
        self.say(f"room {room} ({region}) created, listener joined")
        return listener

    # -- stop --------------------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Workers first (they drain into LiveKit and NATS), then the rest; every group SIGKILLed last."""
        procs = [p for ps in self.workers.values() for p in ps]
        _stop_parallel(procs, timeout=8.0)
        _stop_parallel(list(self.processes.values()), timeout=8.0)
        servers: list[LiveKitServer | NatsServer | JaegerServer] = [
            s for s in (self.livekit, self.nats, self.jaeger) if s is not None
        ]
        _run_parallel([s.stop for s in servers])
        for proc in [*procs, *self.processes.values(), *(s.process for s in servers if s.process)]:
            if proc.proc is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.proc.pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "dev-state.json").unlink()


def _stop_parallel(procs: list[ServerProcess], timeout: float) -> None:
    _run_parallel([functools.partial(p.stop, timeout=timeout) for p in procs])


def _run_parallel(calls: list[Callable[[], None]]) -> None:
    import threading

    threads = [threading.Thread(target=call, daemon=True) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def install_script() -> Path | None:
    """scripts/install-livekit-server of the checkout this package runs from, if any."""
    for base in Path(__file__).resolve().parents:
        candidate = base / "scripts" / "install-livekit-server"
        if candidate.exists():
            return candidate
    found = shutil.which("install-livekit-server")
    return Path(found) if found else None


def ensure_livekit_server(say: Callable[[str, str], None]) -> None:
    try:
        find_livekit_server()
        return
    except MissingBinaryError:
        pass
    script = install_script()
    if script is None:
        raise MissingBinaryError(
            "livekit-server is not installed and scripts/install-livekit-server was not found; "
            "set LIVEKIT_SERVER_BIN to a livekit-server v1.13.5 binary"
        )
    say(f"livekit-server not found: building it with {script} (one-time, a few minutes; needs Go)", "yellow")
    subprocess.run([str(script)], check=True, stdout=subprocess.DEVNULL)
    find_livekit_server()


def _has_agent(room: str) -> Callable[[dict[str, RoomRecord]], bool]:
    live = (RoomState.JOINED, RoomState.SPEAKING, RoomState.FAILED, RoomState.IGNORED)
    return lambda records: room in records and records[room].state in live


def _all_speaking(rooms: list[str]) -> Callable[[dict[str, RoomRecord]], bool]:
    return lambda records: all(r in records and records[r].state == RoomState.SPEAKING for r in rooms)


class _Stopped(Exception):
    """Ctrl-C / SIGTERM: unwinds the TaskGroup, cancelling whatever is starting or running."""


async def _raise_when_set(stop: asyncio.Event) -> None:
    await stop.wait()
    raise _Stopped


async def run_dev(options: DevOptions, console: Console) -> int:
    """Run the dev stack until SIGINT/SIGTERM (or, with exit_when_speaking, until all rooms speak)."""
    stack = DevStack(options, console)
    options.data_dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack.say(f"data and logs in {options.data_dir} (logs/: one file per process)")
    ingest_port = free_tcp_port()
    config_path = options.data_dir / "switchboard.yaml"
    jaeger = await asyncio.to_thread(stack.start_jaeger) if options.jaeger else None
    trace_ui_url = options.trace_ui_url or (jaeger.query_url if jaeger else None)
    config_data = dev_config(ingest_port, options.capacity, trace_ui_url)
    config_path.write_text(json.dumps(config_data, indent=2))  # JSON is YAML
    listeners: list[RoomListener] = []
    result = [130]

    async def main() -> None:
        await stack.start_servers(ingest_port)
        await stack.start_switchboard(config_path, ingest_port)
        stack.write_files(config_path, ingest_port)
        stack.say(f"other commands: source {stack.data_dir / 'dev.env'} && switchboard status", "cyan")
        await _show(stack, parse_config(config_data), listeners, stop, result)
        stop.set()

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_raise_when_set(stop))
            tg.create_task(main())
    except* _Stopped:
        pass
    except* Exception as group:
        for err in group.exceptions:
            stack.say(f"dev stack failed: {type(err).__name__}: {err}", "bold red")
        stack.say(f"logs: {options.data_dir / 'logs'}", "red")
        result[0] = 1
    finally:
        stack.say("stopping every process…")
        for listener in listeners:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await listener.close()
        await asyncio.to_thread(stack.stop_all)
        stack.say("stopped; nothing left running", "green")
    return result[0]


async def _show(
    stack: DevStack,
    config: SwitchboardConfig,
    listeners: list[RoomListener],
    stop: asyncio.Event,
    result: list[int],
) -> None:
    """Demo rooms, then the live table; ``result[0]`` becomes 0 once every room speaks, else 1
    (set before the table shows, so Ctrl-C afterwards still exits with it)."""
    assert stack.nats and stack.livekit
    lkserver = stack.livekit
    rooms = [room for room, _ in demo_rooms(stack.options.rooms)]
    nc = await bus.connect(NatsSettings(url=stack.nats.url, startup_attempts=2), "switchboard-dev")
    try:
        await _until_the_orchestrator_hears_the_pools(stack, nc)
        live = LiveView(nc, config)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(live.run()), tg.create_task(_supervise(stack, stop))]
            async with lk.LiveKitAPI(lkserver.http_url, lkserver.api_key, lkserver.api_secret) as api:
                for room, region in demo_rooms(stack.options.rooms):
                    listeners.append(await stack.create_room(api, room, region))
                    # One room at a time: the rooms go live one after the other on screen, and a
                    # worker never has two jobs connecting to LiveKit in the same instant (see
                    # docs: livekit rtc 1.1.21 can panic on concurrent connects in one process).
                    with contextlib.suppress(TimeoutError):
                        await live.wait_rooms(_has_agent(room), ROOM_STEP_TIMEOUT_S)
            try:
                await live.wait_rooms(_all_speaking(rooms), SPEAKING_TIMEOUT_S)
                heard = sum(1 for lis in listeners if lis.heard.is_set())
                stack.say(
                    f"✔ {ALL_SPEAKING} ({len(rooms)}) after {time.monotonic() - stack.started_at:.1f}s; "
                    f"listeners hearing audio so far: {heard}/{len(rooms)}",
                    "bold green",
                )
                result[0] = 0
            except TimeoutError:
                stack.say(f"✘ not every demo room is speaking after {SPEAKING_TIMEOUT_S:.0f}s", "bold red")
                stack.say(
                    "see: switchboard explain ROOM, and the logs in " + str(stack.data_dir / "logs"), "red"
                )
                result[0] = 1
            if not stack.options.exit_when_speaking:
                stack.say(
                    "drill: switchboard drill kill-pool eu-central-a   (after sourcing dev.env)", "cyan"
                )
                stack.say("Ctrl-C stops everything", "cyan")
                await _display(stack, live, stop)
            for task in tasks:
                task.cancel()
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


async def _display(stack: DevStack, live: LiveView, stop: asyncio.Event) -> None:
    if stack.console.is_terminal:
        with Live(render(live.snapshot()), console=stack.console, refresh_per_second=2) as screen:
            while not stop.is_set():
                screen.update(Group(render(live.snapshot()), Text("Ctrl-C stops everything", style="dim")))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stop.wait()
        return
    # Not a terminal (CI, a pipe): a one-line summary whenever it changes.
    last = ""
    while not stop.is_set():
        snap = live.snapshot()
        pools = " ".join(f"{p.pool}:{p.liveness}:{p.active}/{p.capacity}" for p in snap.pools)
        states = " ".join(f"{r.room}:{r.state.value}" for r in snap.rooms)
        line = f"pools {pools} | rooms {states}"
        if line != last:
            stack.say(line)
            last = line
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await stop.wait()


async def _until_the_orchestrator_hears_the_pools(stack: DevStack, nc: NATS) -> None:
    """Rooms only once the orchestrator has heard every pool beat: a room arriving before would
    wait for a pool, or go to the other region. Asked through the pool census; bounded."""
    wanted = {p.pool for p in DEV_POOLS}
    deadline = asyncio.get_running_loop().time() + WORKER_READY_TIMEOUT_S
    while asyncio.get_running_loop().time() < deadline:
        answered = await ask_orchestrators(nc, timeout_s=0.5)
        if answered is not None and wanted <= {v.pool for v in answered[1] if v.liveness == "alive"}:
            return
        await asyncio.sleep(0.2)
    stack.say("the orchestrator has not heard every pool yet; creating the rooms anyway", "yellow")


async def _supervise(stack: DevStack, stop: asyncio.Event) -> None:
    """Say when a process dies; stop the stack when an essential one does (a worker may: drills)."""
    reported: set[str] = set()
    while True:
        essentials = {**stack.processes}
        if stack.nats and stack.nats.process:
            essentials["nats-server"] = stack.nats.process
        if stack.livekit and stack.livekit.process:
            essentials["livekit-server"] = stack.livekit.process
        for name, proc in essentials.items():
            if not proc.running and name not in reported:
                reported.add(name)
                stack.say(f"{name} exited unexpectedly; see {proc.log_path}", "bold red")
                stop.set()
        for pool, procs in stack.workers.items():
            for proc in procs:
                key = f"{pool}/{proc.pid}"
                if not proc.running and key not in reported:
                    reported.add(key)
                    stack.say(
                        f"a worker of pool {pool} exited (pid {proc.pid}); its rooms fail over", "yellow"
                    )
        await asyncio.sleep(1.0)
