"""The lease on an in-flight step must be renewed while its owner works (issue 7, item 1).

``Reconciler.lease_s`` is ``dispatch_deadline_s + 5``, but one CreateDispatch round can outlast
it: stamina checks the deadline only between tries, a try is bounded by ``request_timeout_s``
per call (not by the lease), and each try is several calls: ListRooms (is the room there?) +
CreateDispatch + ListRooms again (was it deleted meanwhile?), with ListRooms + ListDispatch
after an ambiguous failure (up to 5 x request_timeout_s). With LiveKit answering in 8 s (request timeout
10 s, dispatch deadline 1 s, lease 6 s), a live owner is still waiting for its first answer when
its lease runs out, and another replica's sweep would resume the same room and two replicas
would act on it at once — unless the owner renews its lease while it works
(``orchestrator.room.lease.Lease``), which this checks.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from orchestrator.records import RoomState
from orchestrator.store import open_bucket
from shared.messages import RoomCreated
from shared.settings import LiveKitSettings
from tests.drills.faultproxy import FaultProxy
from tests.orchestratorkit import (
    FakePool,
    make_config,
    make_settings,
    publish_created_room,
    running_orchestrator,
    wait_for_record,
)

pytestmark = pytest.mark.integration


async def test_a_working_owner_keeps_its_room(
    nats_server: NatsServer, nc: NATS, livekit_server: LiveKitServer
) -> None:
    config = make_config(dispatch_deadline_s=1, join_deadline_s=60, assign_check_s=120)
    pool = FakePool(nc, "eu-central-a", "eu-central")
    await pool.start()
    try:
        rec = await _dispatch_through_slow_livekit(nats_server, nc, livekit_server, config)
    finally:
        await pool.stop()
    resumed = [h.detail for h in rec.history if h.event == "resume"]
    assert not resumed, f"another replica took the room over from a live owner: {resumed}"


async def _dispatch_through_slow_livekit(nats_server, nc, livekit_server, config):  # type: ignore[no-untyped-def]
    async with FaultProxy("127.0.0.1", livekit_server.port) as proxy:
        settings = make_settings(nats_server, livekit_server)
        settings = settings.model_copy(
            update={
                "livekit": LiveKitSettings(
                    url=proxy.url,
                    api_key=livekit_server.api_key,
                    api_secret=livekit_server.api_secret,
                    request_timeout_s=10.0,
                )
            }
        )
        async with running_orchestrator(settings, config), running_orchestrator(settings, config):
            kv = await open_bucket(nc.jetstream())
            await proxy.set_mode("slow", delay_s=8.0)
            room = "ornina-lease-1"
            # Created straight in LiveKit (not through the slow proxy), then announced.
            await publish_created_room(
                nc.jetstream(), livekit_server, RoomCreated(room=room, region="eu-central")
            )
            rec = await wait_for_record(kv, room, {RoomState.DISPATCHED}, within=40)
            await proxy.set_mode("pass")
            return rec
