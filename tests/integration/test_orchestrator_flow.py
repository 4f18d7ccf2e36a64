"""The orchestrator against real nats-server and livekit-server, with stand-in pools on NATS.

The pools here are the test itself publishing heartbeats and status reports over real NATS (the
real livekit-agents workers are exercised in test_e2e_*); LiveKit is real, so every room (created
by the test first, as a user's backend does), dispatch and deletion below is LiveKit's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from livekit import api as lkapi
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from orchestrator.livekit_gateway import LiveKitCallError, LiveKitGateway
from orchestrator.membership import live_members, member_id
from orchestrator.override import OVERRIDE_KEY
from orchestrator.records import RoomState
from orchestrator.service import EXIT_LIVEKIT_REJECTS, OrchestratorService
from orchestrator.store import open_bucket
from shared import bus, subjects
from shared.codec import decode, encode
from shared.dispatch_metadata import read_dispatch_metadata
from shared.messages import AgentStatus, PoolHeartbeat, RoomCreated, RoomEnded
from tests.drills.faultproxy import FaultProxy
from tests.orchestratorkit import (
    FakePool,
    make_config,
    make_settings,
    publish_created_room,
    running_orchestrator,
    wait_for_record,
    wait_until,
)

S = RoomState
pytestmark = pytest.mark.integration


async def _named_dispatches(api: lkapi.LiveKitAPI, room: str) -> list[lkapi.AgentDispatch]:
    # ListDispatch on a room that does not exist answers 503 "no response from servers".
    if not (await api.room.list_rooms(lkapi.ListRoomsRequest(names=[room]))).rooms:
        return []
    return [d for d in await api.agent_dispatch.list_dispatch(room_name=room) if d.agent_name]


@contextlib.asynccontextmanager
async def eu_and_us(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer
) -> AsyncIterator[tuple[KeyValue, FakePool, FakePool]]:
    """Stand-in pools eu-central-a and us-east-a beating, and one orchestrator: the rooms bucket
    and the two pools."""
    eu, us = FakePool(nc, "eu-central-a", "eu-central"), FakePool(nc, "us-east-a", "us-east")
    await eu.start()
    await us.start()
    try:
        async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()):
            yield await open_bucket(nc.jetstream()), eu, us
    finally:
        await eu.stop()
        await us.stop()


async def test_room_is_dispatched_to_its_region_and_reaches_speaking(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    js = nc.jetstream()
    async with eu_and_us(nc, nats_server, livekit_server) as (kv, eu, _us):
        await publish_created_room(
            js,
            livekit_server,
            RoomCreated(room="ornina-flow-1", region="eu-central", metadata={"lang": "de"}),
        )
        rec = await wait_for_record(kv, "ornina-flow-1", {S.DISPATCHED})
        assert rec.pool == "eu-central-a" and rec.attempt == 1 and rec.dispatch_id
        [dispatch] = await _named_dispatches(livekit_api, "ornina-flow-1")
        assert dispatch.id == rec.dispatch_id and dispatch.agent_name == eu.agent_name
        read = read_dispatch_metadata(dispatch.metadata)
        assert read.info is not None and read.info.attempt == 1 and read.info.pool == "eu-central-a"
        assert read.user_metadata == '{"lang":"de"}'

        await eu.report("ornina-flow-1", rec.dispatch_id, 1, "joined")
        await wait_for_record(kv, "ornina-flow-1", {S.JOINED})
        await eu.report("ornina-flow-1", rec.dispatch_id, 1, "voice")
        rec = await wait_for_record(kv, "ornina-flow-1", {S.SPEAKING})
        events = [h.event for h in rec.history]
        assert events == ["received", "rule", "decision", "dispatched", "joined", "voice"]
        decision = rec.history[2].data
        assert decision["pool"] == "eu-central-a"
        assert {c["pool"] for c in decision["candidates"]} >= {"eu-central-a"}


async def test_an_override_in_room_metadata_is_not_obeyed(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    """Room metadata is often the end user's to set: an override in it (agent, pool, a restart)
    comes from whoever set it, so on switchboard.rooms.created it is dropped; only the operator's
    switchboard.rooms.manual carries one (tests/integration/test_cli_dispatch.py)."""
    js = nc.jetstream()
    async with eu_and_us(nc, nats_server, livekit_server) as (kv, eu, _us):
        await publish_created_room(
            js,
            livekit_server,
            RoomCreated(
                room="ornina-flow-forged",
                region="eu-central",
                metadata={
                    "lang": "de",
                    OVERRIDE_KEY: {"agent": "other-agent", "pool": "us-east-a", "requested_by": "caller"},
                },
            ),
        )
        rec = await wait_for_record(kv, "ornina-flow-forged", {S.DISPATCHED})
        assert rec.pool == "eu-central-a" and rec.agent == "ornina-avatar-agent"
        assert not rec.manual and rec.override_agent is None and rec.override_pool is None
        [dispatch] = await _named_dispatches(livekit_api, "ornina-flow-forged")
        assert dispatch.agent_name == eu.agent_name
        assert read_dispatch_metadata(dispatch.metadata).user_metadata == '{"lang":"de"}'


async def test_room_matching_no_rule_is_ignored_with_the_reason(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    js = nc.jetstream()
    async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()):
        kv = await open_bucket(js)
        await bus.publish_room_created(js, RoomCreated(room="lobby-1"))
        rec = await wait_for_record(kv, "lobby-1", {S.IGNORED})
        assert rec.reason == "no_rule" and "no rule matches" in rec.history[-1].detail
    assert await _named_dispatches(livekit_api, "lobby-1") == []


async def test_room_event_for_a_room_livekit_does_not_have_ends_it_without_creating_it(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    """CreateDispatch creates a room it does not find (a ghost nobody will ever join): the
    orchestrator asks LiveKit first, and a room it does not have is over (``room_gone``)."""
    js = nc.jetstream()
    pool = FakePool(nc, "eu-central-a", "eu-central")
    await pool.start()
    async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()):
        kv = await open_bucket(js)
        await bus.publish_room_created(js, RoomCreated(room="ornina-ghost", region="eu-central"))
        rec = await wait_for_record(kv, "ornina-ghost", {S.ENDED, S.FAILED, S.DISPATCHED})
        assert rec.state == S.ENDED and rec.reason == "room_gone", rec.history
        assert rec.dispatch_id is None and "LiveKit has no room" in rec.history[-1].detail
    await pool.stop()
    assert not (await livekit_api.room.list_rooms(lkapi.ListRoomsRequest(names=["ornina-ghost"]))).rooms


async def test_full_home_region_spills_to_the_neighbour(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer
) -> None:
    js = nc.jetstream()
    eu = FakePool(nc, "eu-central-a", "eu-central", capacity=1, active=1)
    us = FakePool(nc, "us-east-a", "us-east")
    await eu.start()
    await us.start()
    async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()):
        kv = await open_bucket(js)
        await publish_created_room(js, livekit_server, RoomCreated(room="ornina-spill", region="eu-central"))
        rec = await wait_for_record(kv, "ornina-spill", {S.DISPATCHED})
        assert rec.pool == "us-east-a"
        assert "full" in rec.history[2].data["rejections"]["eu-central-a"]
    await eu.stop()
    await us.stop()


async def test_join_timeout_redispatches_elsewhere_and_deletes_the_old_dispatch(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    js = nc.jetstream()
    a, b = FakePool(nc, "eu-central-a", "eu-central"), FakePool(nc, "eu-central-b", "eu-central", capacity=2)
    await a.start()
    await b.start()
    async with running_orchestrator(
        make_settings(nats_server, livekit_server), make_config(join_deadline_s=1)
    ):
        kv = await open_bucket(js)
        await publish_created_room(
            js, livekit_server, RoomCreated(room="ornina-timeout", region="eu-central")
        )
        first = await wait_for_record(kv, "ornina-timeout", {S.DISPATCHED})
        # Nobody reports joined: after the deadline the room goes to the other pool.
        await wait_for_record(kv, "ornina-timeout", {S.REDISPATCHING, S.DISPATCHING})
        rec = await wait_for_record(kv, "ornina-timeout", {S.DISPATCHED})
        assert rec.pool != first.pool and first.pool in rec.excluded
        assert any(h.event == "redispatch" and "join_timeout" in h.detail for h in rec.history)
        ids = [d.id for d in await _named_dispatches(livekit_api, "ornina-timeout")]
        assert ids == [rec.dispatch_id]  # the first dispatch was deleted
    await a.stop()
    await b.stop()


async def test_when_every_pool_has_failed_the_room_once_it_tries_the_best_again(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer
) -> None:
    js = nc.jetstream()
    a, b = FakePool(nc, "eu-central-a", "eu-central"), FakePool(nc, "eu-central-b", "eu-central")
    await a.start()
    await b.start()
    async with running_orchestrator(
        make_settings(nats_server, livekit_server), make_config(join_deadline_s=1, max_attempts=4)
    ):
        kv = await open_bucket(js)
        await publish_created_room(js, livekit_server, RoomCreated(room="ornina-slow", region="eu-central"))
        # Nobody joins anywhere: attempt 1 and 2 time out on each pool, attempt 3 goes back.
        rec = await wait_until(kv, "ornina-slow", lambda r: r.attempt == 3, "a third attempt")
        assert rec.state not in (S.FAILED, S.WAITING_FOR_POOL), rec.history[-1]
        assert sorted(rec.excluded) == ["eu-central-a", "eu-central-b"]
        assert any("every fit pool had failed this room once" in h.detail for h in rec.history)
        # max_attempts still bounds it.
        rec = await wait_for_record(kv, "ornina-slow", {S.FAILED}, within=30)
        assert rec.reason == "max_attempts" and rec.attempt == 4
    await a.stop()
    await b.stop()


async def test_dead_pool_moves_its_speaking_rooms(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    js = nc.jetstream()
    eu, us = FakePool(nc, "eu-central-a", "eu-central"), FakePool(nc, "us-east-a", "us-east")
    await eu.start()
    await us.start()
    async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()):
        kv = await open_bucket(js)
        await publish_created_room(js, livekit_server, RoomCreated(room="ornina-dies", region="eu-central"))
        rec = await wait_for_record(kv, "ornina-dies", {S.DISPATCHED})
        assert rec.dispatch_id
        await eu.report("ornina-dies", rec.dispatch_id, 1, "joined")
        await eu.report("ornina-dies", rec.dispatch_id, 1, "voice")
        await wait_for_record(kv, "ornina-dies", {S.SPEAKING})
        await eu.stop()  # the pool goes silent
        rec = await wait_for_record(kv, "ornina-dies", {S.DISPATCHED})
        assert rec.pool == "us-east-a" and rec.attempt == 2 and "eu-central-a" not in rec.excluded
        assert any(h.event == "redispatch" and "pool_dead" in h.detail for h in rec.history)
        assert [d.id for d in await _named_dispatches(livekit_api, "ornina-dies")] == [rec.dispatch_id]
    await us.stop()


class Heard(logging.Handler):
    """Set once a log line holding ``text`` was emitted (the orchestrator runs in this loop)."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text, self.event = text, asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


@contextlib.asynccontextmanager
async def heard(text: str, within: float = 10.0) -> AsyncIterator[None]:
    """The block's end waits (bounded) for a warning of the orchestrator's holding ``text``."""
    handler = Heard(text)
    logger = logging.getLogger("orchestrator.service")
    logger.addHandler(handler)
    try:
        yield
        async with asyncio.timeout(within):
            await handler.event.wait()
    finally:
        logger.removeHandler(handler)


async def test_a_worker_speaks_only_for_its_own_pool(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer
) -> None:
    """Issue 17: NATS lets a pool's workers publish only their pool's subjects; a heartbeat or report
    whose body names another pool is dropped. Forged beats do not keep a dead pool alive, and a
    forged voice report does not mark a room speaking."""
    js = nc.jetstream()
    async with eu_and_us(nc, nats_server, livekit_server) as (kv, eu, _us):
        await publish_created_room(js, livekit_server, RoomCreated(room="ornina-forge", region="eu-central"))
        rec = await wait_for_record(kv, "ornina-forge", {S.DISPATCHED})
        assert rec.pool == "eu-central-a" and rec.dispatch_id
        # us-east-a's worker reports voice for eu-central-a's room, on its own subject.
        forged = AgentStatus(
            room="ornina-forge",
            dispatch_id=rec.dispatch_id,
            attempt=1,
            pool="eu-central-a",
            worker=eu.worker,
            state="voice",
            at=datetime.now(UTC),
            identity=f"agent-{rec.dispatch_id}",
        )
        async with heard(f"dropped a message on {subjects.room_status('us-east-a')}"):
            await bus.publish(js, subjects.room_status("us-east-a"), forged, "forged-voice")
        assert (await wait_for_record(kv, "ornina-forge", {S.DISPATCHED})).state == S.DISPATCHED

        # eu-central-a dies; us-east-a's worker keeps beating in its name, on its own subject.
        await eu.stop()
        seq = itertools.count(10_000)

        async def forge() -> None:
            while True:
                beat = PoolHeartbeat(
                    pool="eu-central-a",
                    agent=eu.agent,
                    region="eu-central",
                    agent_name=eu.agent_name,
                    worker=eu.worker,
                    capacity=eu.capacity,
                    active=1,
                    load=0.1,
                    version="test",
                    seq=next(seq),
                    at=datetime.now(UTC),
                    jobs=[rec.dispatch_id or ""],
                )
                await nc.publish(subjects.pool_heartbeat("us-east-a"), encode(beat))
                await asyncio.sleep(0.1)

        forging = asyncio.create_task(forge())
        try:
            async with heard(f"dropped a message on {subjects.pool_heartbeat('us-east-a')}"):
                pass
            moved = await wait_until(kv, "ornina-forge", lambda r: r.attempt == 2, "moved", 20)
            assert moved.pool == "us-east-a"
            assert any(h.event == "redispatch" and "pool_dead" in h.detail for h in moved.history)
        finally:
            forging.cancel()


async def test_room_waits_for_a_pool_and_goes_when_one_appears(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer
) -> None:
    js = nc.jetstream()
    async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()):
        kv = await open_bucket(js)
        await publish_created_room(js, livekit_server, RoomCreated(room="ornina-wait"))
        rec = await wait_for_record(kv, "ornina-wait", {S.WAITING_FOR_POOL})
        assert "no pool" in rec.history[-1].detail or "no live pool" in rec.history[-1].detail
        pool = FakePool(nc, "eu-central-a", "eu-central")
        await pool.start()
        rec = await wait_for_record(kv, "ornina-wait", {S.DISPATCHED})
        assert rec.pool == "eu-central-a"
        await pool.stop()


async def test_no_pool_until_the_deadline_fails_the_room(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer
) -> None:
    js = nc.jetstream()
    async with running_orchestrator(
        make_settings(nats_server, livekit_server), make_config(no_pool_deadline_s=0.5)
    ):
        kv = await open_bucket(js)
        await publish_created_room(js, livekit_server, RoomCreated(room="ornina-nopool"))
        rec = await wait_for_record(kv, "ornina-nopool", {S.FAILED})
        assert rec.reason == "no_pool"


async def test_room_end_stops_watching_and_deletes_the_dispatch(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    js = nc.jetstream()
    pool = FakePool(nc, "eu-central-a", "eu-central")
    await pool.start()
    async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()):
        kv = await open_bucket(js)
        await publish_created_room(js, livekit_server, RoomCreated(room="ornina-end"))
        await wait_for_record(kv, "ornina-end", {S.DISPATCHED})
        await bus.publish_room_ended(js, RoomEnded(room="ornina-end"))
        # Ended is written first, with the dispatch kept for removal; the removal follows.
        rec = await wait_until(
            kv, "ornina-end", lambda r: r.state == S.ENDED and not r.removal_pending, "ended and cleaned up"
        )
        assert rec.deadline is None and rec.reason == "room_ended"
        assert [e.removed for e in rec.replaced] == [True]
        assert await _named_dispatches(livekit_api, "ornina-end") == []
    await pool.stop()


async def test_a_replica_livekit_refuses_takes_no_part_and_no_room_fails(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17: a replica with a wrong LiveKit secret (a bad rollout) waits, not ready, without
    joining the members or pulling; the room is served by a replica LiveKit accepts, and fails
    nowhere. No secret reaches the log."""
    js = nc.jetstream()
    wrong = "wrong-secret-0123456789-abcdefghijklmnop"
    pool = FakePool(nc, "eu-central-a", "eu-central")
    await pool.start()
    bad = OrchestratorService(make_settings(nats_server, livekit_server, secret=wrong), make_config())
    with caplog.at_level(logging.DEBUG):
        async with heard("LiveKit rejects this replica's API credentials"):
            running = asyncio.create_task(bad.run())
        try:
            assert not bad.readiness.ready and "LIVEKIT_API_SECRET" in bad.readiness.details["livekit"]
            assert member_id(bad.replica) not in await live_members(js)
            async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()):
                kv = await open_bucket(js)
                await publish_created_room(js, livekit_server, RoomCreated(room="ornina-auth"))
                rec = await wait_for_record(kv, "ornina-auth", {S.DISPATCHED})
                assert rec.pool == "eu-central-a" and rec.attempt == 1
                assert not [h for h in rec.history if h.event == "dispatch_error"]
                assert member_id(bad.replica) not in await live_members(js)
        finally:
            bad.request_stop()
            await asyncio.wait_for(running, 15)
    await pool.stop()
    assert wrong not in caplog.text and livekit_server.api_secret not in caplog.text


async def test_a_replica_steps_back_when_livekit_stops_accepting_its_credentials(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret rotated on LiveKit's side under a running replica: it leaves the members (its
    partitions move at once) and exits with its own code, for its supervisor to start it again."""
    js = nc.jetstream()
    refuse = asyncio.Event()
    check = LiveKitGateway.check_credentials

    async def rotated(gateway: LiveKitGateway) -> None:
        if refuse.is_set():
            raise LiveKitCallError(
                "unauthenticated", "ListRooms: LiveKit rejected the API credentials", permanent=True
            )
        await check(gateway)

    monkeypatch.setattr(LiveKitGateway, "check_credentials", rotated)
    async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()) as service:
        await wait_members(js, lambda members: member_id(service.replica) in members)
        refuse.set()
        await wait_members(js, lambda members: member_id(service.replica) not in members)
        async with asyncio.timeout(15):
            await service._stop.wait()
    assert service.exit_code == EXIT_LIVEKIT_REJECTS


async def wait_members(
    js: JetStreamContext, until: Callable[[list[str]], bool], within: float = 15.0
) -> None:
    async with asyncio.timeout(within):
        while not until(await live_members(js)):  # noqa: ASYNC110 (a KV listing, no event to await)
            await asyncio.sleep(0.1)


async def test_bad_messages_are_dead_lettered_and_good_ones_around_them_still_flow(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer
) -> None:
    js = nc.jetstream()
    await bus.ensure_streams(js)
    pool = FakePool(nc, "eu-central-a", "eu-central")
    await pool.start()
    async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()):
        kv = await open_bucket(js)
        await js.publish(subjects.ROOM_CREATED, b"\xff not json", headers={"Nats-Msg-Id": "bad-1"})
        await js.publish(subjects.ROOM_CREATED, b'{"v":9,"room":"x"}', headers={"Nats-Msg-Id": "bad-2"})
        await publish_created_room(js, livekit_server, RoomCreated(room="ornina-good"))
        await js.publish(subjects.ROOM_STATUS, b'{"v":1}', headers={"Nats-Msg-Id": "bad-3"})
        await wait_for_record(kv, "ornina-good", {S.DISPATCHED})
        dead = await js.pull_subscribe(
            f"{subjects.DEAD_LETTER}.>", durable="inspect", stream=subjects.DEAD_LETTER_STREAM
        )
        msgs = await dead.fetch(3, timeout=5)
        while len(msgs) < 3:
            msgs += await dead.fetch(3 - len(msgs), timeout=5)
        reasons = sorted((m.headers or {})[subjects.REJECT_REASON_HEADER].split(":")[0] for m in msgs)
        assert reasons == ["invalid", "not_utf8", "unknown_version"]
        assert {m.data for m in msgs} >= {b"\xff not json", b'{"v":9,"room":"x"}'}
    await pool.stop()


async def test_livekit_down_for_a_while_then_back_dispatches_with_bounded_retries(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer
) -> None:
    """LiveKit's API becomes unreachable (a proxy in front of it refuses connections, as a stopped
    server would; stopping the server itself would also lose its rooms); a room arrives; LiveKit
    comes back on the same address: the room waits for it, then is dispatched, after a bounded
    number of rounds (each CreateDispatch try is a span, counted here)."""
    js = nc.jetstream()
    pool = FakePool(nc, "eu-central-a", "eu-central")
    await pool.start()
    try:
        async with FaultProxy("127.0.0.1", livekit_server.port) as proxy:
            settings = make_settings(nats_server, livekit_server)
            settings = settings.model_copy(
                update={"livekit": settings.livekit.model_copy(update={"url": proxy.url})}
            )
            config = make_config(dispatch_deadline_s=1.5, livekit_retry_s=1)
            async with running_orchestrator(settings, config):
                kv = await open_bucket(js)
                await proxy.set_mode("down")
                await publish_created_room(js, livekit_server, RoomCreated(room="ornina-outage"))
                # Wait until the orchestrator has really failed at least one round against the
                # unreachable server.
                rec = await wait_until(
                    kv,
                    "ornina-outage",
                    lambda r: any(h.event == "dispatch_error" for h in r.history),
                    "a failed dispatch round",
                )
                assert (
                    "cannot connect to LiveKit"
                    in next(h for h in rec.history if h.event == "dispatch_error").detail
                )
                rec = await wait_for_record(kv, "ornina-outage", {S.WAITING_FOR_LIVEKIT})
                assert rec.reason == "unreachable", rec.history[-1]
                await proxy.set_mode("pass")
                rec = await wait_for_record(kv, "ornina-outage", {S.DISPATCHED}, within=20)
                rounds = [h for h in rec.history if h.event == "dispatch_error"]
                assert 1 <= len(rounds) < config.orchestrator.max_dispatch_rounds
                async with lkapi.LiveKitAPI(
                    livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
                ) as api:
                    assert [d.id for d in await _named_dispatches(api, "ornina-outage")] == [rec.dispatch_id]
    finally:
        await pool.stop()


async def test_dispatch_livekit_never_assigns_is_redispatched_before_the_join_deadline(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    """The seed outage, caught: LiveKit accepts the dispatch but no worker of that agent_name is
    registered with it, so it never creates a job. The orchestrator notices within assign_check_s."""
    js = nc.jetstream()
    pool = FakePool(nc, "eu-central-a", "eu-central")  # heartbeats on NATS, nobody on LiveKit
    await pool.start()
    config = make_config(assign_check_s=0.5, join_deadline_s=60)
    async with running_orchestrator(make_settings(nats_server, livekit_server), config):
        kv = await open_bucket(js)
        await publish_created_room(js, livekit_server, RoomCreated(room="ornina-unassigned"))
        first = await wait_for_record(kv, "ornina-unassigned", {S.DISPATCHED})
        rec = await wait_until(kv, "ornina-unassigned", lambda r: r.attempt >= 2, "a second attempt")
        redispatch = next(h for h in rec.history if h.event == "redispatch")
        assert redispatch.data["cause"] == "not_assigned" and "no job" in redispatch.detail
        assert rec.excluded == []  # LiveKit's view, not the pool's fault: the pool stays eligible
        assert first.dispatch_id not in [
            d.id for d in await _named_dispatches(livekit_api, "ornina-unassigned")
        ]
    await pool.stop()


async def test_a_pool_of_long_job_lists_releases_its_reservation_by_the_changes_it_beats(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer
) -> None:
    """A worker listing more than 32 jobs beats only what changed, most of the time: the replica
    still sees the job of the dispatch it made (its reservation released), and sees it go."""
    js = nc.jetstream()
    busy = [f"AD_busy{i}" for i in range(40)]
    pool = FakePool(nc, "eu-central-a", "eu-central", capacity=100, active=40, jobs=list(busy))
    deltas: list[PoolHeartbeat] = []
    beaten = asyncio.Event()

    async def on_beat(msg: Msg) -> None:
        beat = decode(PoolHeartbeat, msg.data)
        if beat.jobs_delta is not None:
            deltas.append(beat)
        beaten.set()

    async def eventually(holds: Callable[[], bool], what: str) -> None:
        """Until ``holds()`` (the replica's state): looked at again after each beat, bounded."""
        async with asyncio.timeout(10):
            while not holds():
                beaten.clear()
                await beaten.wait()
        assert holds(), what

    sub = await nc.subscribe(subjects.pool_heartbeat("eu-central-a"), cb=on_beat)
    await pool.start()
    async with running_orchestrator(make_settings(nats_server, livekit_server), make_config()) as service:
        kv = await open_bucket(js)
        await publish_created_room(
            js, livekit_server, RoomCreated(room="ornina-flow-deltas", region="eu-central")
        )
        rec = await wait_for_record(kv, "ornina-flow-deltas", {S.DISPATCHED})
        assert rec.dispatch_id is not None

        def listed() -> bool:
            view = service.registry.view("eu-central-a", time.monotonic())
            return view is not None and rec.dispatch_id in view.jobs

        def reserved() -> int:
            views = service.registry.snapshot(time.monotonic())
            return service.index.reserved({v.pool: v.jobs for v in views}).get("eu-central-a", 0)

        assert not listed() and reserved() == 1
        seen = len(deltas)
        pool.jobs = [*busy, rec.dispatch_id]  # the worker took the job
        await eventually(lambda: listed() and reserved() == 0, "the job listed by a delta beat")
        assert any(rec.dispatch_id in (b.jobs_delta.added if b.jobs_delta else []) for b in deltas[seen:])
        pool.jobs = list(busy)  # and it ended
        await eventually(lambda: not listed(), "the job gone from the replica's view")
    await sub.unsubscribe()
    await pool.stop()
