"""Test kit for the agent worker: the worker as a real subprocess, and real observers around it.

- :class:`WorkerProcess` runs ``switchboard worker`` in its own process group, waits until its
  health endpoint says it is registered with LiveKit, and is always stopped (group-wide SIGKILL as
  the last resort, then a check that no process of the group is left).
- :class:`Inbox` collects decoded NATS messages (statuses, heartbeats) and awaits conditions on
  them with a timeout — no sleeps.
- :class:`Listener` is a user joining the room with the LiveKit rtc SDK and measuring the RMS of
  the agent's audio as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pytest
from livekit import api as lkapi
from livekit import rtc
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from orchestrator.devstack.livekit_server import LiveKitServer
from orchestrator.devstack.nats_server import NatsServer
from orchestrator.devstack.ports import free_tcp_port
from orchestrator.devstack.process import ServerProcess
from shared import subjects
from shared.codec import decode
from shared.dispatch_metadata import attempt_key, build_dispatch_metadata
from shared.messages import AgentStatus, DispatchInfo, Message, PoolHeartbeat

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
REPO_ROOT = Path(__file__).resolve().parent.parent
REGISTER_TIMEOUT_S = 60.0
# Speech from espeak-ng peaks at -20..-6 dBFS with an RMS around 0.05-0.2 of full scale over a
# 10 ms frame; what an idle Opus track decodes to (silence, comfort noise) stays below 0.001.
# 0.01 (-40 dBFS) sits an order of magnitude from both.
AUDIBLE_RMS = 0.01
HARD_EXIT = 137  # agent_worker.control: a remote exit looks like a SIGKILL to supervisors

M = TypeVar("M", bound=Message)


@dataclass
class WorkerProcess:
    livekit: LiveKitServer
    nats_url: str
    workdir: Path
    pool: str
    agent: str = "test-agent"
    region: str = "eu-central"
    capacity: int = 2
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    health_port: int = field(default_factory=free_tcp_port)
    process: ServerProcess | None = None

    @property
    def agent_name(self) -> str:
        return subjects.pool_agent_name(self.agent, self.pool)

    def argv(self) -> list[str]:
        return [
            SWITCHBOARD,
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
            *self.extra_args,
        ]

    def env(self) -> dict[str, str]:
        return {
            "NATS_URL": self.nats_url,
            "NATS_STARTUP_ATTEMPTS": "2",
            "LIVEKIT_URL": self.livekit.ws_url,
            "LIVEKIT_API_KEY": self.livekit.api_key,
            "LIVEKIT_API_SECRET": self.livekit.api_secret,
            "SWITCHBOARD_CONFIG": str(self.workdir / "absent-switchboard.yaml"),
            "SWITCHBOARD_WORKER_DRAIN_GRACE_S": "5",
            # User entrypoints are importable the way a user's own package would be.
            "PYTHONPATH": str(REPO_ROOT),
            **self.extra_env,
        }

    def start(self, timeout: float = REGISTER_TIMEOUT_S) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = ServerProcess(
            f"worker-{self.pool}", self.argv(), self.workdir / f"worker-{self.pool}.log", env=self.env()
        )
        self.process.start()
        self.process.wait_ready(lambda: self.health()[0] == 200, timeout)

    def health(self, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as resp:
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return int(err.code), json.loads(err.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError):
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


class WorkerFactory:
    def __init__(self, livekit: LiveKitServer, nats_url: str, workdir: Path) -> None:
        self._livekit, self._nats_url, self._workdir = livekit, nats_url, workdir
        self.started: list[WorkerProcess] = []

    def start(self, pool: str, *, wait: bool = True, **kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(self._livekit, self._nats_url, self._workdir / pool, pool, **kwargs)
        self.started.append(worker)
        if wait:
            worker.start()
        else:
            worker.workdir.mkdir(parents=True, exist_ok=True)
            worker.process = ServerProcess(
                f"worker-{pool}", worker.argv(), worker.workdir / "worker.log", env=worker.env()
            )
            worker.process.start()
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()
        left = [w.pool for w in self.started if w.process and w.leftovers()]
        assert not left, f"processes left behind by workers of {left}"


@pytest.fixture
def workers(
    livekit_server: LiveKitServer, nats_server: NatsServer, tmp_path: Path
) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(livekit_server, nats_server.url, tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


class Inbox(Generic[M]):
    """Decoded messages from one NATS subject, with a way to await the one a test needs."""

    def __init__(self, model: type[M]) -> None:
        self._model = model
        self.items: list[tuple[M, dict[str, str]]] = []
        self._changed = asyncio.Condition()

    async def on_msg(self, msg: Msg) -> None:
        item = decode(self._model, msg.data)
        async with self._changed:
            self.items.append((item, dict(msg.headers or {})))
            self._changed.notify_all()

    @property
    def messages(self) -> list[M]:
        return [m for m, _ in self.items]

    async def wait_for(self, match: Callable[[M], bool], within_s: float, what: str = "message") -> M:
        try:
            async with asyncio.timeout(within_s), self._changed:
                while (found := next((m for m in self.messages if match(m)), None)) is None:
                    await self._changed.wait()
                return found
        except TimeoutError:
            raise AssertionError(f"no {what} within {within_s}s; got {self.messages}") from None

    def headers_of(self, message: M) -> dict[str, str]:
        return next(h for m, h in self.items if m is message)


@contextlib.asynccontextmanager
async def inbox(nc: NATS, subject: str, model: type[M]) -> AsyncIterator[Inbox[M]]:
    box: Inbox[M] = Inbox(model)
    sub = await nc.subscribe(subject, cb=box.on_msg)
    try:
        yield box
    finally:
        await sub.unsubscribe()


def statuses(nc: NATS) -> contextlib.AbstractAsyncContextManager[Inbox[AgentStatus]]:
    """JetStream publishes are ordinary publishes on the subject: a core subscription sees them
    without consuming from the work-queue stream the orchestrator owns."""
    return inbox(nc, subjects.ROOM_STATUS, AgentStatus)


def heartbeats(nc: NATS, pool: str) -> contextlib.AbstractAsyncContextManager[Inbox[PoolHeartbeat]]:
    return inbox(nc, subjects.pool_heartbeat(pool), PoolHeartbeat)


def is_state(dispatch_id: str, state: str) -> Callable[[AgentStatus], bool]:
    return lambda s: s.dispatch_id == dispatch_id and s.state == state


async def dispatch(
    lk: lkapi.LiveKitAPI,
    worker: WorkerProcess,
    room: str,
    *,
    attempt: int = 1,
    user_metadata: str | None = None,
    raw_metadata: str | None = None,
    agent_name: str | None = None,
) -> str:
    """CreateDispatch to the worker's pool the way the orchestrator does; returns the dispatch id."""
    if raw_metadata is None:
        info = DispatchInfo(
            room=room,
            attempt=attempt,
            pool=worker.pool,
            region=worker.region,
            agent=worker.agent,
            key=attempt_key(room, attempt),
        )
        metadata = build_dispatch_metadata(user_metadata, info)
    else:
        metadata = raw_metadata
    async with asyncio.timeout(10):
        created = await lk.agent_dispatch.create_dispatch(
            lkapi.CreateAgentDispatchRequest(
                agent_name=agent_name or worker.agent_name, room=room, metadata=metadata
            )
        )
    return str(created.id)


class Listener:
    """A user in the room: subscribes to the agent's audio and measures what arrives."""

    def __init__(self, livekit: LiveKitServer, room: str, identity: str = "listener") -> None:
        self._livekit = livekit
        self._room_name = room
        self._identity = identity
        self.room = rtc.Room()
        self.loudest_rms = 0.0
        self.audible_frames = 0
        self._audible = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Listener:
        token = (
            lkapi.AccessToken(self._livekit.api_key, self._livekit.api_secret)
            .with_identity(self._identity)
            .with_grants(lkapi.VideoGrants(room_join=True, room=self._room_name))
            .to_jwt()
        )
        self.room.on("track_subscribed", self._on_track)
        async with asyncio.timeout(15):
            await self.room.connect(self._livekit.ws_url, token)
        return self

    async def __aexit__(self, *_: object) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        await self.room.disconnect()

    def _on_track(self, track: rtc.Track, _pub: Any, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._readers.append(asyncio.create_task(self._read(rtc.AudioStream(track))))

    async def _read(self, stream: rtc.AudioStream) -> None:
        async for event in stream:
            samples = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64) / 32768.0
            rms = math.sqrt(float(np.mean(samples**2))) if samples.size else 0.0
            self.loudest_rms = max(self.loudest_rms, rms)
            if rms >= AUDIBLE_RMS:
                self.audible_frames += 1
                if self.audible_frames >= 10:  # 100 ms of sound, not one stray frame
                    self._audible.set()

    async def wait_audible(self, within_s: float) -> None:
        async with asyncio.timeout(within_s):
            await self._audible.wait()


async def agents_in_room(lk: lkapi.LiveKitAPI, room: str) -> list[Any]:
    async with asyncio.timeout(10):
        listed = await lk.room.list_participants(lkapi.ListParticipantsRequest(room=room))
    return [p for p in listed.participants if p.kind == lkapi.ParticipantInfo.Kind.AGENT]


async def agent_attribute(livekit: LiveKitServer, room: str, key: str, within_s: float = 15.0) -> str:
    """Join ``room`` as an observer and wait (on room events) until the agent has attribute ``key``."""
    observer = rtc.Room()
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def check(participant: rtc.Participant) -> None:
        is_agent = participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        if is_agent and key in participant.attributes and not found.done():
            found.set_result(participant.attributes[key])

    observer.on("participant_connected", check)
    observer.on("participant_attributes_changed", lambda _changed, p: check(p))
    token = (
        lkapi.AccessToken(livekit.api_key, livekit.api_secret)
        .with_identity(f"observer-{room}")
        .with_grants(lkapi.VideoGrants(room_join=True, room=room, can_publish=False))
        .to_jwt()
    )
    try:
        async with asyncio.timeout(within_s):
            await observer.connect(livekit.ws_url, token)
            for participant in observer.remote_participants.values():
                check(participant)
            return await found
    finally:
        await observer.disconnect()
