"""NATS unreachable at start and again mid-job: the worker keeps serving LiveKit and buffers its
reports (visible as ``pending_reports`` on /healthz), then delivers them to JetStream in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
from livekit import api as lkapi

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from shared import bus, subjects
from shared.codec import decode
from shared.messages import AgentStatus
from tests.workerkit import WorkerProcess, agents_in_room, dispatch


async def _wait_health(
    worker: WorkerProcess, check: str, predicate: object, within_s: float
) -> dict[str, object]:
    """/healthz is polled: it is the operator's view being tested, and it has no events to await."""
    async with asyncio.timeout(within_s):
        while True:
            _, body = await asyncio.to_thread(worker.health)
            if body and predicate(body):  # type: ignore[operator]
                return body
            await asyncio.sleep(0.2)


async def _stream_statuses(url: str, count: int, within_s: float) -> list[AgentStatus]:
    client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
    try:
        js = client.jetstream()
        # The worker creates the streams once it connects; we may get there first (idempotent).
        await bus.ensure_streams(js)
        sub = await js.pull_subscribe(subjects.ROOM_STATUS_WILDCARD, durable="outage-test")
        got: list[AgentStatus] = []
        async with asyncio.timeout(within_s):
            while len(got) < count:
                try:
                    batch = await sub.fetch(count - len(got), timeout=1)
                except nats.errors.TimeoutError:
                    continue
                for msg in batch:
                    got.append(decode(AgentStatus, msg.data))
                    await msg.ack()
        return got
    finally:
        await client.close()


async def test_reports_survive_nats_outages(
    livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI, tmp_path: Path
) -> None:
    late_nats = NatsServer(tmp_path / "nats")  # ports picked, not started yet
    worker = WorkerProcess(livekit_server, late_nats.url, tmp_path / "worker", "pool-outage")
    try:
        worker.start()  # ready = registered with LiveKit, NATS or not
        status, health = worker.health()
        assert status == 200 and health["nats"]["state"] != "connected"  # type: ignore[index]

        room = "room-outage"
        dispatch_id = await dispatch(livekit_api, worker, room)
        await _wait_health(worker, "pending", lambda h: h["pending_reports"] >= 1, 30)
        assert len(await agents_in_room(livekit_api, room)) == 1  # the agent joined regardless

        late_nats.start()
        (joined,) = await _stream_statuses(late_nats.url, 1, 20)
        assert (joined.dispatch_id, joined.state) == (dispatch_id, "joined")
        await _wait_health(worker, "drained", lambda h: h["pending_reports"] == 0, 10)

        late_nats.stop()  # mid-job
        async with asyncio.timeout(10):
            await livekit_api.room.delete_room(lkapi.DeleteRoomRequest(room=room))
        body = await _wait_health(worker, "left pending", lambda h: h["pending_reports"] >= 1, 20)
        assert body["nats"]["state"] != "connected"  # type: ignore[index]

        late_nats.start()
        (left,) = await _stream_statuses(late_nats.url, 1, 30)
        assert (left.dispatch_id, left.state) == (dispatch_id, "left")
    finally:
        worker.stop()
        late_nats.stop()
    assert not worker.leftovers()
