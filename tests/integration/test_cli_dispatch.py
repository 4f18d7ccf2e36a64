"""`switchboard dispatch`: the manual dispatch the outage needed, through the normal path."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from orchestrator.ops.dispatch import manual_dispatch
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

S = RoomState
pytestmark = pytest.mark.integration


async def test_manual_dispatch_pins_the_pool_restarts_a_finished_room_and_refuses_a_live_one(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer
) -> None:
    js = nc.jetstream()
    settings = make_settings(nats_server, livekit_server)
    a, b = FakePool(nc, "eu-central-a", "eu-central"), FakePool(nc, "eu-central-b", "eu-central")
    await a.start()
    await b.start()
    async with running_orchestrator(settings, make_config(no_pool_deadline_s=0.3)):
        kv = await open_bucket(js)
        # A room no rule matches is ignored; an operator dispatches it by hand, naming agent and pool.
        await publish_created_room(js, livekit_server, RoomCreated(room="vip-lobby"))
        await wait_for_record(kv, "vip-lobby", {S.IGNORED})
        outcome = await manual_dispatch(
            nc, settings.livekit, "vip-lobby", agent=a.agent_name.split(".")[0], pool="eu-central-b"
        )
        assert outcome.published and outcome.record is not None
        rec = await wait_for_record(kv, "vip-lobby", {S.DISPATCHED})
        assert rec.pool == "eu-central-b" and rec.rule == "manual" and rec.manual
        assert rec.user_metadata is None or "_switchboard_override" not in rec.user_metadata
        assert "manual dispatch" in rec.history[0].detail

        # Asking again while the room is live is refused, not a second agent.
        again = await manual_dispatch(nc, settings.livekit, "vip-lobby")
        assert not again.published and "already has a live record" in again.message
    await a.stop()
    await b.stop()
