"""`explain` on rooms driven through the in-process orchestrator with stand-in pools over real NATS."""

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
from orchestrator.ops.explain import explain_record, explain_unknown
from orchestrator.records import RoomState
from orchestrator.store import open_bucket
from shared.config import Rule
from shared.messages import RoomCreated
from tests.orchestratorkit import (
    FakePool,
    make_config,
    make_settings,
    publish_created_room,
    running_orchestrator,
    wait_for_record,
    wait_until,
)

pytestmark = pytest.mark.integration
S = RoomState
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
JAEGER = "http://jaeger.example:16686"


async def test_explain_speaking_redispatched_ignored_failed_and_unknown_rooms(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    js = nc.jetstream()
    a = FakePool(nc, "eu-central-a", "eu-central")
    b = FakePool(nc, "eu-central-b", "eu-central", capacity=2)
    await a.start()
    await b.start()
    config = make_config(join_deadline_s=1)
    try:
        async with running_orchestrator(make_settings(nats_server, livekit_server), config):
            kv = await open_bucket(js)
            for room in ("ornina-x-speaks", "ornina-x-moves", "lobby-x"):
                await publish_created_room(js, livekit_server, RoomCreated(room=room, region="eu-central"))
            # Speaking: joined and voice reported on its first dispatch.
            rec = await wait_for_record(kv, "ornina-x-speaks", {S.DISPATCHED})
            pool = a if rec.pool == a.pool else b
            assert rec.dispatch_id
            await pool.report("ornina-x-speaks", rec.dispatch_id, 1, "joined")
            await pool.report("ornina-x-speaks", rec.dispatch_id, 1, "voice")
            speaking = await wait_for_record(kv, "ornina-x-speaks", {S.SPEAKING})
            # Redispatched: nobody joins in time; the second pool's agent then joins and speaks.
            first = await wait_for_record(kv, "ornina-x-moves", {S.DISPATCHED})
            moved = await wait_until(
                kv, "ornina-x-moves", lambda r: r.state == S.DISPATCHED and r.attempt == 2, "redispatched"
            )
            other = b if moved.pool == b.pool else a
            assert moved.dispatch_id and moved.pool != first.pool
            await other.report("ornina-x-moves", moved.dispatch_id, 2, "joined")
            await other.report("ornina-x-moves", moved.dispatch_id, 2, "voice")
            moved = await wait_for_record(kv, "ornina-x-moves", {S.SPEAKING})
            ignored = await wait_for_record(kv, "lobby-x", {S.IGNORED})
        # Failed: a rule whose agent no pool serves, past its deadline for a pool.
        unserved = config.model_copy(
            update={
                "rules": [*config.rules, Rule(name="nobody", match="nobody-*", agent="nobody")],
                "orchestrator": config.orchestrator.model_copy(update={"no_pool_deadline_s": 0.5}),
            }
        )
        async with running_orchestrator(make_settings(nats_server, livekit_server), unserved):
            await publish_created_room(js, livekit_server, RoomCreated(room="nobody-x-fails"))
            failed = await wait_for_record(kv, "nobody-x-fails", {S.FAILED})
    finally:
        await a.stop()
        await b.stop()

    text = "\n".join(explain_record(speaking, JAEGER))
    assert "state      speaking (attempt 1" in text
    for event in ("received", "rule", "decision", "dispatched", "joined", "voice"):
        assert f" {event} " in text
    assert "candidates (ranked):" in text and "← chosen" in text and "headroom" in text
    assert speaking.trace_id and f"{JAEGER}/trace/{speaking.trace_id}" in text

    text = "\n".join(explain_record(moved))
    assert "state      speaking (attempt 2" in text
    assert "redispatch" in text and "cause join_timeout on pool " + str(first.pool) in text
    assert f"excluded   {first.pool}" in text
    assert "excluded" in text.split("rejected:")[-1]
    assert text.count(" decision ") == 2 and text.count("dispatch id ") == 2

    text = "\n".join(explain_record(ignored))
    assert "state      ignored" in text and "no rule matches room 'lobby-x'" in text

    text = "\n".join(explain_record(failed))
    assert "state      failed" in text and "reason no_pool" in text

    text = "\n".join(explain_unknown("ornina-never", config.rules))
    assert "never received an event" in text and "matched rule 'ornina'" in text
    assert "switchboard dispatch ornina-never" in text
    assert "add a rule" in "\n".join(explain_unknown("lobby-never", config.rules))

    # The command prints the same timeline (and exits 1 for a room it has never seen).
    conf = tmp_path / "switchboard.yaml"
    conf.write_text(json.dumps({**config.model_dump(mode="json"), "trace_ui_url": JAEGER}))
    env = {**os.environ, "NATS_URL": nats_server.url, "SWITCHBOARD_CONFIG": str(conf)}
    proc = await asyncio.create_subprocess_exec(
        SWITCHBOARD, "explain", "ornina-x-moves", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    print(out.decode())  # the screen, for whoever reads the test log
    assert proc.returncode == 0 and "cause join_timeout" in out.decode() and JAEGER in out.decode()
    proc = await asyncio.create_subprocess_exec(
        SWITCHBOARD, "explain", "ornina-never", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and "never received" in out.decode()
