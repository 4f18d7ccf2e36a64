"""Replicas divide the rooms (real nats-server and livekit-server, stand-in pools on NATS): each
tracks the partitions the membership gives it, every room is tracked by exactly one, and when a
replica stops — cleanly or by SIGKILL — the others take its rooms over, timers and failover
included."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from livekit import api as lkapi
from nats.aio.client import Client as NATS

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from orchestrator.membership import member_id, open_members_bucket
from orchestrator.partitions import PARTITIONS, assign, owned_by, partition_of
from orchestrator.records import RoomState
from orchestrator.service import OrchestratorService
from orchestrator.store import open_bucket
from shared.messages import RoomCreated
from tests.orchestratorkit import (
    FakePool,
    OrchestratorProcess,
    make_config,
    make_settings,
    publish_created_room,
    running_orchestrator,
    wait_for_record,
    wait_until,
)

S = RoomState
pytestmark = pytest.mark.integration


async def _until(what: str, holds: Callable[[], bool], within: float = 10.0) -> float:
    """Seconds until ``holds()`` (in-process state with no event of its own to await)."""
    began = time.monotonic()
    async with asyncio.timeout(within):
        while not holds():  # noqa: ASYNC110 (the replicas' own state: nothing to await)
            await asyncio.sleep(0.02)
    return time.monotonic() - began


def _divided(replicas: list[OrchestratorService]) -> bool:
    views = {r.ownership.members for r in replicas}
    return (
        len(views) == 1
        and len(views.pop()) == len(replicas)
        and all(r.readiness.index_synced for r in replicas)
    )


def _reserved(replica: OrchestratorService) -> dict[str, int]:
    """What the replica's placements count per pool (its own rooms in flight and the others')."""
    assert replica.controller is not None
    return replica.controller.reserved(replica.registry.snapshot(time.monotonic()))


async def _dispatch_count(api: lkapi.LiveKitAPI, room: str) -> int:
    return len([d for d in await api.agent_dispatch.list_dispatch(room_name=room) if d.agent_name])


async def test_two_replicas_divide_the_rooms_and_one_takes_all_when_the_other_stops(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, livekit_api: lkapi.LiveKitAPI
) -> None:
    js = nc.jetstream()
    pool = FakePool(nc, "eu-central-a", "eu-central", capacity=20)
    await pool.start()
    settings, config = make_settings(nats_server, livekit_server), make_config()
    try:
        async with contextlib.AsyncExitStack() as stack:
            a = await stack.enter_async_context(running_orchestrator(settings, config))
            b_stack = contextlib.AsyncExitStack()
            b = await b_stack.enter_async_context(running_orchestrator(settings, config))
            await _until("both replicas see both", lambda: _divided([a, b]))
            assert a.ownership.owned.isdisjoint(b.ownership.owned)
            assert a.ownership.owned | b.ownership.owned == frozenset(range(PARTITIONS))
            assert len(a.ownership.owned) == len(b.ownership.owned) == PARTITIONS // 2

            kv = await open_bucket(js)
            rooms = [f"ornina-share-{i}" for i in range(12)]
            for room in rooms:
                await publish_created_room(js, livekit_server, RoomCreated(room=room, region="eu-central"))
            for room in rooms:
                rec = await wait_for_record(kv, room, {S.DISPATCHED})
                assert rec.attempt == 1 and await _dispatch_count(livekit_api, room) == 1
            # Whichever replica took each event, exactly one tracks the room: its partition's owner.
            await _until(
                "each room tracked once",
                lambda: all((a.index.get(r) is None) != (b.index.get(r) is None) for r in rooms),
            )
            for room in rooms:
                owner = a if partition_of(room) in a.ownership.owned else b
                assert owner.index.get(room) is not None
            assert len(a.index) + len(b.index) == len(rooms)
            # The stand-in pool never lists their jobs, so all 12 stay reserved: each replica
            # counts each room once (its own partitions', plus the other's report).
            await _until(
                "both replicas count all 12 reservations",
                lambda: _reserved(a) == _reserved(b) == {"eu-central-a": len(rooms)},
            )

            # A clean stop deletes b's membership key: a takes every partition at once.
            await b_stack.aclose()
            took = await _until(
                "a tracks everything",
                lambda: a.ownership.owned == frozenset(range(PARTITIONS)) and a.readiness.index_synced,
            )
            assert took < config.orchestrator.member_ttl_s  # no waiting for the key to expire
            assert all(a.index.get(r) is not None for r in rooms)
    finally:
        await pool.stop()


async def test_a_sigkilled_replicas_rooms_fail_over_by_the_survivor(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    """Two replicas started as the README shows; the room lives in the partition of the one that
    is SIGKILLed (no clean stop: its key expires). Its pool then dies: the survivor, which took
    the partition over, moves the room to the other pool."""
    js = nc.jetstream()
    config = make_config()  # the default member_ttl_s (3 s)
    procs = [
        OrchestratorProcess(tmp_path / name, nats_server.url, livekit_server, config, name=name)
        for name in ("orch-a", "orch-b")
    ]
    first, second = FakePool(nc, "eu-central-a", "eu-central"), FakePool(nc, "eu-central-b", "eu-central")
    await first.start()
    try:
        for proc in procs:
            await asyncio.to_thread(proc.start)
        members_kv = await open_members_bucket(js, config.orchestrator.member_ttl_s)

        async def members() -> list[str]:
            with contextlib.suppress(Exception):  # no keys yet
                return sorted(k[2:] for k in await members_kv.keys())
            return []

        async with asyncio.timeout(15):
            while len(await members()) < 2:  # noqa: ASYNC110 (polling the bucket's keys)
                await asyncio.sleep(0.1)
        names = await members()
        victim_proc = next(p for p in procs if any(m.startswith(_host_prefix(p)) for m in names))
        victim = next(m for m in names if m.startswith(_host_prefix(victim_proc)))
        theirs = owned_by(assign(names), victim)
        room = next(f"ornina-kill-{i}" for i in range(1000) if partition_of(f"ornina-kill-{i}") in theirs)

        kv = await open_bucket(js)
        await publish_created_room(js, livekit_server, RoomCreated(room=room, region="eu-central"))
        rec = await wait_for_record(kv, room, {S.DISPATCHED})
        assert rec.pool == "eu-central-a"
        await second.start()

        victim_proc.kill()
        killed_at = time.monotonic()
        await first.stop()  # the pool dies too: only the survivor can move the room
        moved = await wait_until(
            kv, room, lambda r: r.state == S.DISPATCHED and r.pool == "eu-central-b", "moved", within=20
        )
        took = time.monotonic() - killed_at
        assert moved.attempt == 2
        survivor = next(p for p in procs if p is not victim_proc)
        assert "gained" in survivor.log_text()
        # Detected within the member TTL plus the pool's death and a few sweeps, not minutes.
        assert took < config.orchestrator.member_ttl_s + 10
    finally:
        for proc in procs:
            proc.stop()
        await second.stop()
        with contextlib.suppress(Exception):
            await first.stop()


def _host_prefix(proc: OrchestratorProcess) -> str:
    """Member ids are ``<host>-<pid>-<hex>`` (host dots as underscores): this process's prefix."""
    return member_id(f"{socket.gethostname()}-{proc.pid}-")
