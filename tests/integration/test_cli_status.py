"""`status --json` matches the live stack; `drain` stops new rooms landing on the pool."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from orchestrator.records import RoomState
from orchestrator.store import open_bucket
from shared import bus, subjects
from shared.control import PoolCommand
from shared.messages import RoomCreated
from tests.orchestratorkit import (
    FakePool,
    make_config,
    make_settings,
    publish_created_room,
    running_orchestrator,
    wait_for_record,
)
from tests.workerkit import inbox

pytestmark = pytest.mark.integration
S = RoomState
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


async def switchboard(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        SWITCHBOARD, *args, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_status_json_matches_the_stack_and_drain_moves_new_rooms_away(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    js = nc.jetstream()
    config = make_config()
    conf = tmp_path / "switchboard.yaml"
    conf.write_text(json.dumps(config.model_dump(mode="json")))
    env = {"NATS_URL": nats_server.url, "SWITCHBOARD_CONFIG": str(conf)}
    eu = FakePool(nc, "eu-central-a", "eu-central", capacity=4, active=1)
    us = FakePool(nc, "us-east-a", "us-east", capacity=2)
    await eu.start()
    await us.start()
    try:
        async with running_orchestrator(make_settings(nats_server, livekit_server), config):
            kv = await open_bucket(js)
            await publish_created_room(
                js, livekit_server, RoomCreated(room="ornina-st-1", region="eu-central")
            )
            await bus.publish_room_created(js, RoomCreated(room="lobby-st"))
            rec = await wait_for_record(kv, "ornina-st-1", {S.DISPATCHED})
            assert rec.pool == "eu-central-a" and rec.dispatch_id
            await eu.report("ornina-st-1", rec.dispatch_id, 1, "voice")
            await wait_for_record(kv, "ornina-st-1", {S.SPEAKING})
            await wait_for_record(kv, "lobby-st", {S.IGNORED})

            code, out = await switchboard(env, "status", "--json")
            assert code == 0, out
            status = json.loads(out)
            # The running replica answered (no listening window); it judges the pools it schedules on.
            assert status["pools_from"].startswith("orchestrator "), status["pools_from"]
            pools = {p["pool"]: p for p in status["pools"]}
            assert set(pools) == {"eu-central-a", "us-east-a"}
            assert pools["eu-central-a"] | {"heartbeat_age_s": None} == {
                "pool": "eu-central-a",
                "agent": eu.agent_name.split(".")[0],
                "region": "eu-central",
                "agent_name": eu.agent_name,
                "workers": 1,
                "capacity": 4,
                "active": 1,
                "load": 0.25,
                "heartbeat_age_s": None,
                "liveness": "alive",
                "draining": False,
            }
            assert pools["us-east-a"]["capacity"] == 2 and pools["us-east-a"]["liveness"] == "alive"
            assert status["rooms_by_state"] == {"ignored": 1, "speaking": 1}
            rooms = {r["room"]: r for r in status["rooms"]}
            assert (
                rooms["ornina-st-1"]["state"] == "speaking" and rooms["ornina-st-1"]["pool"] == "eu-central-a"
            )
            assert rooms["ornina-st-1"]["trace_id"] == rec.trace_id
            assert rooms["lobby-st"]["reason"] == "no_rule"

            code, out = await switchboard(env, "status")  # the tables render too
            assert code == 0 and "eu-central-a" in out and "speaking 1" in out
            print(out)

            # Drain: the pool's workers are asked, and the next eu room goes abroad.
            async with inbox(nc, subjects.pool_control("eu-central-a"), PoolCommand) as commands:
                code, out = await switchboard(env, "drain", "eu-central-a")
                assert code == 0, out
                assert "eu-central-a-w1" in out
                command = await commands.wait_for(lambda c: c.command == "drain", 10, "drain command")
            assert command.worker is None
            await publish_created_room(
                js, livekit_server, RoomCreated(room="ornina-st-2", region="eu-central")
            )
            rec = await wait_for_record(kv, "ornina-st-2", {S.DISPATCHED})
            assert rec.pool == "us-east-a"
            assert "draining" in rec.history[2].data["rejections"]["eu-central-a"]
    finally:
        await eu.stop()
        await us.stop()


async def test_status_without_an_orchestrator_listens_to_the_heartbeats(
    nc: NATS, nats_server: NatsServer, tmp_path: Path
) -> None:
    conf = tmp_path / "switchboard.yaml"
    conf.write_text(json.dumps(make_config().model_dump(mode="json")))
    env = {"NATS_URL": nats_server.url, "SWITCHBOARD_CONFIG": str(conf)}
    eu = FakePool(nc, "eu-central-a", "eu-central", capacity=3, active=2)
    await eu.start()
    try:
        code, out = await switchboard(env, "status", "--json")
    finally:
        await eu.stop()
    assert code == 0, out
    status = json.loads(out)
    assert status["pools_from"] == "heartbeats"
    (pool,) = status["pools"]
    seen = (pool["pool"], pool["capacity"], pool["active"], pool["liveness"])
    assert seen == ("eu-central-a", 3, 2, "alive")
