"""A gateway cut between two regions of a real NATS supercluster (issue 18): a replica started with
its region keeps the rooms of the region behind the cut where they are; one started without (one
NATS cluster assumed) moves them, which is what the regions rule is for."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.livekit_server import LiveKitServer
from orchestrator.ops.watch import wait_for_room
from orchestrator.records import RoomState
from orchestrator.store import open_bucket
from shared.messages import RoomCreated
from tests.orchestratorkit import (
    FakePool,
    make_config,
    make_settings,
    publish_created_room,
    running_orchestrator,
    wait_for_record,
)
from tests.supercluster import EU, US, client, two_region_supercluster

S = RoomState
pytestmark = pytest.mark.integration

CUT_S = 4.0  # beats every 0.2 s, dead after 3 missed: the cut lasts over six death limits


@pytest.mark.parametrize("region", [EU, None], ids=["with-region", "without-region"])
async def test_a_gateway_cut_moves_the_rooms_behind_it_only_for_a_replica_without_its_region(
    region: str | None, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    room = f"ornina-gw-{region or 'none'}"
    async with (
        two_region_supercluster(tmp_path) as sc,
        client(sc.servers[EU].url) as nc_eu,
        client(sc.servers[US].url) as nc_us,
    ):
        eu, us = FakePool(nc_eu, "eu-central-a", EU), FakePool(nc_us, "us-east-a", US)
        await eu.start()
        await us.start()
        settings = make_settings(sc.servers[EU], livekit_server).model_copy(update={"region": region})
        try:
            async with running_orchestrator(settings, make_config(region_lost_after_s=30.0)):
                js = nc_eu.jetstream()
                kv = await open_bucket(js)
                await publish_created_room(js, livekit_server, RoomCreated(room=room, region=US))
                rec = await wait_for_record(kv, room, {S.DISPATCHED})
                assert rec.pool == "us-east-a" and rec.dispatch_id
                # The us pool's reports cross the gateway into the stream in eu-central.
                await us.report(room, rec.dispatch_id, 1, "joined")
                await us.report(room, rec.dispatch_id, 1, "voice")
                await wait_for_record(kv, room, {S.SPEAKING})

                await sc.cut()
                moved = await wait_for_room(kv, room, lambda r: r.state != S.SPEAKING, CUT_S)
                if region is None:
                    # One NATS cluster assumed: us-east-a looks dead, its live agent is pulled out.
                    assert moved.reached and moved.record is not None
                    assert any(
                        h.event == "redispatch" and "pool_dead" in h.detail for h in moved.record.history
                    )
                    return
                assert not moved.reached, moved.record
                await sc.heal()
                await us.beat()
                after = await wait_for_room(kv, room, lambda r: r.state != S.SPEAKING, 1.0)
                assert not after.reached, after.record
                final = await wait_for_record(kv, room, {S.SPEAKING}, within=1.0)
                assert final.pool == "us-east-a" and final.attempt == 1
        finally:
            await eu.stop()
            await us.stop()
