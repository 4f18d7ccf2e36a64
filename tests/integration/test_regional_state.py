"""Per-region state on a real NATS supercluster (issue 18): each region's rooms live in its own
streams and buckets, in its own NATS cluster, owned by its own replicas, so a region cut off from
the other keeps taking and serving its rooms; a gateway cut moves none."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from devstack.livekit_server import LiveKitServer
from orchestrator.ops.watch import wait_for_room
from orchestrator.records import RoomRecord, RoomState
from orchestrator.store import open_bucket, room_key
from shared.config import Rule, SwitchboardConfig
from shared.messages import RoomCreated
from shared.subjects import Cell
from tests.orchestratorkit import (
    AGENT,
    FakePool,
    create_livekit_room,
    make_config,
    make_settings,
    publish_created_room,
    running_orchestrator,
    wait_for_record,
)
from tests.supercluster import EU, US, SuperCluster, client, two_region_supercluster

S = RoomState
pytestmark = pytest.mark.integration

CUT_S = 4.0  # beats every 0.2 s, dead after 3 missed: the cut lasts over six death limits


async def read_until(
    kv: KeyValue, room: str, done: Callable[[RoomRecord], bool], within: float
) -> RoomRecord | None:
    """The room's record once ``done`` holds for it, else the last one read after ``within``.

    Read, not watched: a watch is a new consumer, and creating one needs the JetStream meta leader,
    which a region cut off from the majority of the supercluster's JetStream servers has not got.
    Gets and updates of its own streams work (that is what lets it serve its rooms meanwhile)."""
    last: RoomRecord | None = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while True:
                with contextlib.suppress(KeyNotFoundError):
                    entry = await kv.get(room_key(room))
                    last = RoomRecord.model_validate_json(entry.value or b"")
                    if done(last):
                        return last
                await asyncio.sleep(0.05)
    return last


CELLS = {EU: Cell(EU), US: Cell(US)}
POOLS = {EU: "eu-central-a", US: "us-east-a"}


@dataclass
class TwoRegions:
    sc: SuperCluster
    ncs: dict[str, NATS]  # region -> a client of its own cluster
    pools: dict[str, FakePool]  # region -> its stand-in pool, reporting into the region's cell
    kvs: dict[str, KeyValue]  # region -> its rooms bucket


@contextlib.asynccontextmanager
async def two_regions(
    livekit: LiveKitServer, root: Path, config: SwitchboardConfig
) -> AsyncIterator[TwoRegions]:
    """A supercluster with JetStream in both regions, and in each region a stand-in pool and a replica
    started with the region, on its own cluster, with ``config`` (``state: per_region``)."""
    async with (
        two_region_supercluster(root, us_jetstream=True) as sc,
        client(sc.servers[EU].url) as nc_eu,
        client(sc.servers[US].url) as nc_us,
        contextlib.AsyncExitStack() as stack,
    ):
        ncs = {EU: nc_eu, US: nc_us}
        pools = {r: FakePool(ncs[r], POOLS[r], r, cell=CELLS[r]) for r in (EU, US)}
        for region in (EU, US):
            await pools[region].start()
            stack.push_async_callback(pools[region].stop)
            settings = make_settings(sc.servers[region], livekit).model_copy(update={"region": region})
            await stack.enter_async_context(running_orchestrator(settings, config))
        kvs = {r: await open_bucket(ncs[r].jetstream(), cell=CELLS[r]) for r in (EU, US)}
        yield TwoRegions(sc, ncs, pools, kvs)


async def test_each_region_takes_and_serves_its_own_rooms_through_a_gateway_cut(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    config = make_config(region_lost_after_s=30.0).model_copy(update={"state": "per_region"})
    cells = CELLS
    async with two_regions(livekit_server, tmp_path, config) as world:
        sc, ncs, pools, kvs = world.sc, world.ncs, world.pools, world.kvs
        # Each region's streams and buckets sit on its own cluster's servers.
        for region in (EU, US):
            info = await ncs[region].jetstream().stream_info(cells[region].rooms_stream)
            assert info.cluster is not None and info.cluster.name == region

        async def serve(region: str, room: str) -> None:
            """A room of ``region`` published into its cell, dispatched to its pool, speaking."""
            js = ncs[region].jetstream()
            await publish_created_room(
                js, livekit_server, RoomCreated(room=room, region=region), cells[region]
            )
            rec = await read_until(kvs[region], room, lambda r: r.state == S.DISPATCHED, 15.0)
            assert rec is not None and rec.state == S.DISPATCHED, (region, rec)
            assert rec.pool == pools[region].pool and rec.dispatch_id
            await pools[region].report(room, rec.dispatch_id, 1, "joined")
            await pools[region].report(room, rec.dispatch_id, 1, "voice")
            spoke = await read_until(kvs[region], room, lambda r: r.state == S.SPEAKING, 15.0)
            assert spoke is not None and spoke.state == S.SPEAKING, (region, spoke)

        await serve(EU, "ornina-cell-eu-1")
        await serve(US, "ornina-cell-us-1")
        # A room lives in its own region's bucket only.
        for region, other in ((EU, US), (US, EU)):
            with pytest.raises(KeyNotFoundError):
                await kvs[other].get(room_key(f"ornina-cell-{region[:2]}-1"))

        await sc.cut()
        # Rooms created while the regions are apart are served each in its own region, and the
        # rooms already speaking stay where they are.
        await asyncio.gather(serve(EU, "ornina-cell-eu-2"), serve(US, "ornina-cell-us-2"))
        for region in (EU, US):
            room = f"ornina-cell-{region[:2]}-1"
            moved = await read_until(kvs[region], room, lambda r: r.state != S.SPEAKING, CUT_S)
            assert moved is not None and moved.state == S.SPEAKING, moved
        await sc.heal()
        for region in (EU, US):
            for n in (1, 2):
                # Read too: after a heal JetStream answers "temporarily unavailable" in both regions
                # while the meta group elects again (5.4 s here), and a watch cannot be made then.
                final = await read_until(kvs[region], f"ornina-cell-{region[:2]}-{n}", lambda r: True, 20.0)
                assert final is not None and final.state == S.SPEAKING, final
                assert final.pool == pools[region].pool and final.attempt == 1


async def test_a_room_whose_event_was_lost_is_adopted_by_its_own_region_only(
    livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    """LiveKit lists every node's rooms to every region's resync: each region adopts only the rooms
        homed in it (the metadata's region, else the default region) that no other region's cell knows,
    so no room gets two agents."""
    resync = {"resync_interval_s": 0.5, "resync_grace_s": 0.5}
    config = make_config(region_lost_after_s=30.0, **resync).model_copy(
        update={"state": "per_region", "rules": [Rule(name="rr", match="rr-*", agent=AGENT, priority=10)]}
    )
    async with two_regions(livekit_server, tmp_path, config) as world:
        kvs = world.kvs
        # A room without a region whose event us-east took (its ingest homes such rooms in
        # us-east): the default region's resync must leave it to us-east.
        await publish_created_room(
            world.ncs[US].jetstream(), livekit_server, RoomCreated(room="rr-us-event", region=US), CELLS[US]
        )
        await wait_for_record(kvs[US], "rr-us-event", {S.DISPATCHED})
        # No event for these two: only the resync can find them.
        await create_livekit_room(livekit_server, "rr-us", metadata='{"region": "us-east"}')
        await create_livekit_room(livekit_server, "rr-none")
        for room, home in (("rr-us", US), ("rr-none", EU)):
            rec = await wait_for_record(kvs[home], room, {S.DISPATCHED})
            assert rec.origin == "resync" and rec.home_region == home, rec
        # Several passes later, none of them has a record in the other region.
        for room, other in (("rr-us", EU), ("rr-none", US), ("rr-us-event", EU)):
            late = await wait_for_room(kvs[other], room, lambda r: True, 2.0)
            assert late.record is None, (other, late.record)
