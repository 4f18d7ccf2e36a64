"""Test kit for the agent worker: the worker as a real subprocess, and real observers around it.

- :class:`WorkerProcess` (devstack's, with the tests' defaults) runs ``switchboard worker`` in its
  own process group, waits until its health endpoint says it is registered with LiveKit, and is
  always stopped; :class:`WorkerFactory` and the ``workers`` fixture check that no process of any
  worker's group is left behind.
- :class:`Inbox` collects decoded NATS messages (statuses, heartbeats) and awaits conditions on
  them with a timeout — no sleeps.
- :class:`Listener` (devstack's RoomListener) is a user joining the room with the LiveKit rtc SDK
  and measuring the RMS of the agent's audio as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
from livekit import api as lkapi
from livekit import rtc
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from devstack import worker_process
from devstack.listener import RoomListener, join_token
from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from shared import subjects
from shared.codec import decode
from shared.dispatch_metadata import attempt_key, build_dispatch_metadata
from shared.messages import AgentStatus, DispatchInfo, Message, PoolHeartbeat

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
REPO_ROOT = Path(__file__).resolve().parent.parent
HARD_EXIT = 137  # agent_worker.control: a remote exit looks like a SIGKILL to supervisors

M = TypeVar("M", bound=Message)

Listener = RoomListener  # the tests' name for devstack's listening participant


@dataclass
class WorkerProcess(worker_process.WorkerProcess):
    """devstack's worker process with the tests' agent, and the checkout on its PYTHONPATH: user
    entrypoints (tests.agents.*) are importable the way a user's own package would be."""

    agent: str = "test-agent"
    pythonpath: str | None = str(REPO_ROOT)


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
            worker.launch()
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
    return inbox(nc, subjects.ROOM_STATUS_WILDCARD, AgentStatus)


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
    token = join_token(livekit, room, f"observer-{room}", can_publish=False)
    try:
        async with asyncio.timeout(within_s):
            await observer.connect(livekit.ws_url, token)
            for participant in observer.remote_participants.values():
                check(participant)
            return await found
    finally:
        await observer.disconnect()
