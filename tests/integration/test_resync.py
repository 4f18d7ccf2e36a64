"""The resync and the room lifecycle's edges, against real nats-server and livekit-server.

Webhooks get lost; these tests lose them on purpose by never publishing the event, and check that
the orchestrator's resync (LiveKit's room list against the records) makes up for it: a room with
no event is served, a record whose room is gone ends, and a newer room of the same name
supersedes the old record. Pools are stand-ins on NATS (tests/orchestratorkit.FakePool).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from livekit import api as lkapi
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from orchestrator.records import RoomState
from orchestrator.room.resync import read_last_pass
from orchestrator.store import open_bucket
from shared import bus, subjects
from shared.config import Rule, SwitchboardConfig
from shared.messages import RoomCreated, RoomEnded
from tests.orchestratorkit import (
    AGENT,
    FakePool,
    make_config,
    make_settings,
    running_orchestrator,
    wait_for_record,
    wait_until,
)

S = RoomState
pytestmark = pytest.mark.integration

# A pass every half second; rooms and records count as settled after half a second.
RESYNC = {"resync_interval_s": 0.5, "resync_grace_s": 0.5}


def config(**orchestrator: object) -> SwitchboardConfig:
    """The kit's config with a rule for this module's rooms only: the session's livekit-server
    still lists other tests' ``rs-*`` rooms, which a resync here would otherwise serve."""
    base = make_config(**orchestrator)
    return base.model_copy(update={"rules": [Rule(name="rs", match="rs-*", agent=AGENT, priority=10)]})


async def _create(api: lkapi.LiveKitAPI, room: str) -> str:
    made = await api.room.create_room(lkapi.CreateRoomRequest(name=room, empty_timeout=600))
    return str(made.sid)


async def _listed(api: lkapi.LiveKitAPI, room: str) -> list[lkapi.Room]:
    return list((await api.room.list_rooms(lkapi.ListRoomsRequest(names=[room]))).rooms)


async def test_a_room_whose_event_never_came_is_served_and_one_whose_end_never_came_ends(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    js = nc.jetstream()
    pool = FakePool(nc, "eu-central-a", "eu-central")
    await pool.start()
    try:
        async with running_orchestrator(make_settings(nats_server, livekit_server), config(**RESYNC)):
            kv = await open_bucket(js)
            sid = await _create(livekit_api, "rs-lost-start")
            await _create(livekit_api, "lobby-lost-start")  # matches no rule: left alone
            rec = await wait_for_record(kv, "rs-lost-start", {S.DISPATCHED})
            assert rec.sid == sid and rec.origin == "resync" and rec.pool == "eu-central-a"
            assert rec.history[0].event == "reconciled" and "never arrived" in rec.history[0].detail
            # Nothing was published for it: the stream holds no room event.
            assert (await js.stream_info(subjects.ROOMS_STREAM)).state.messages == 0
            assert "lobby-lost-start" not in await kv.keys()  # the same pass saw it, and left it alone

            await pool.report("rs-lost-start", rec.dispatch_id or "", 1, "voice")
            await wait_for_record(kv, "rs-lost-start", {S.SPEAKING})
            # The room ends in LiveKit and its room_finished is lost: the resync ends the record.
            await livekit_api.room.delete_room(lkapi.DeleteRoomRequest(room="rs-lost-start"))
            rec = await wait_for_record(kv, "rs-lost-start", {S.ENDED})
            assert rec.reason == "room_gone" and "no longer lists" in rec.history[-1].detail

            last = await read_last_pass(js)
            assert last is not None and last["found_total"] >= 1 and last.get("error") is None
    finally:
        await pool.stop()


async def test_an_end_before_its_start_and_a_start_for_a_missing_room_never_create_a_room(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    js = nc.jetstream()
    pool = FakePool(nc, "eu-central-a", "eu-central")
    await pool.start()
    try:
        async with running_orchestrator(make_settings(nats_server, livekit_server), config(**RESYNC)):
            kv = await open_bucket(js)
            # room_finished handled before room_started (another replica, a backlog).
            await bus.publish_room_ended(js, RoomEnded(room="rs-early-end", sid="RM_early"))
            await wait_for_record(kv, "rs-early-end", {S.ENDED})
            await bus.publish_room_created(js, RoomCreated(room="rs-early-end", sid="RM_early"))
            # An event for a room LiveKit does not have (it ended before the event was handled).
            await bus.publish_room_created(js, RoomCreated(room="rs-no-room", sid="RM_none"))
            rec = await wait_for_record(kv, "rs-no-room", {S.ENDED, S.DISPATCHED})
            assert rec.state == S.ENDED and rec.reason == "room_gone" and rec.dispatch_id is None
            early = await wait_for_record(kv, "rs-early-end", {S.ENDED})
            assert [h.event for h in early.history] == ["ended"]
            # Two resync passes later LiveKit still has neither room: no dispatch created one.
            await wait_for_pass(js, after=rec.history[-1].at + 1.0)
            assert await _listed(livekit_api, "rs-no-room") == []
            assert await _listed(livekit_api, "rs-early-end") == []
    finally:
        await pool.stop()


async def test_a_newer_room_of_the_same_name_supersedes_a_live_record(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    js = nc.jetstream()
    pool = FakePool(nc, "eu-central-a", "eu-central")
    await pool.start()
    try:
        events_only = config(resync_interval_s=0)  # the events alone decide here
        async with running_orchestrator(make_settings(nats_server, livekit_server), events_only):
            kv = await open_bucket(js)
            first = await _create(livekit_api, "rs-reused")
            await bus.publish_room_created(
                js, RoomCreated(room="rs-reused", sid=first, created_at=datetime.now(UTC))
            )
            old = await wait_for_record(kv, "rs-reused", {S.DISPATCHED})
            # The room ends, its room_finished is lost, and a new room of the name starts.
            await livekit_api.room.delete_room(lkapi.DeleteRoomRequest(room="rs-reused"))
            second = await _create(livekit_api, "rs-reused")
            await bus.publish_room_created(
                js, RoomCreated(room="rs-reused", sid=second, created_at=datetime.now(UTC))
            )
            new = await wait_until(
                kv,
                "rs-reused",
                lambda r: r.sid == second and r.state == S.DISPATCHED,
                "the new room dispatched",
            )
            assert new.sid == second and new.dispatch_id != old.dispatch_id
            assert "superseded" in [h.event for h in new.history]
            assert [r.dispatch_id for r in new.replaced] == [old.dispatch_id] and not new.removal_pending
            # A late duplicate of the first room's event changes nothing.
            seq = await bus.publish_room_created(
                js, RoomCreated(room="rs-reused", sid=first, created_at=datetime(2026, 1, 1, tzinfo=UTC))
            )
            await wait_for_ack(js, seq)
            after = await wait_for_record(kv, "rs-reused", {S.DISPATCHED})
            assert after.sid == second and after.dispatch_id == new.dispatch_id
            [dispatch] = [
                d
                for d in await livekit_api.agent_dispatch.list_dispatch(room_name="rs-reused")
                if d.agent_name
            ]
            assert dispatch.id == new.dispatch_id
    finally:
        await pool.stop()


async def wait_for_ack(js: JetStreamContext, seq: int, within: float = 10.0) -> None:
    """Until the orchestrator's consumer acked the room event at stream sequence ``seq``."""
    async with asyncio.timeout(within):
        while True:
            info = await js.consumer_info(subjects.ROOMS_STREAM, subjects.ORCHESTRATOR_CONSUMER)
            if info.ack_floor.stream_seq >= seq:
                return
            await asyncio.sleep(0.05)


async def wait_for_pass(js: JetStreamContext, after: float, within: float = 10.0) -> None:
    """Until a resync pass asked ListRooms after ``after`` (unix seconds)."""
    async with asyncio.timeout(within):
        while True:
            last = await read_last_pass(js)
            if last is not None and float(last.get("at") or 0) > after:
                return
            await asyncio.sleep(0.1)
