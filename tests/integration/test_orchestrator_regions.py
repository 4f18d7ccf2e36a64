"""A replica started with its region (issue 18): another region going silent as a whole is cut off,
not dead, until ``region_lost_after_s``; started as the README shows, an unknown region is refused."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from orchestrator.ops.watch import wait_for_room
from orchestrator.records import RoomState
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
)

S = RoomState
pytestmark = pytest.mark.integration

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


async def test_a_silent_region_keeps_its_rooms_until_it_is_lost(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer
) -> None:
    js = nc.jetstream()
    eu, us = FakePool(nc, "eu-central-a", "eu-central"), FakePool(nc, "us-east-a", "us-east")
    await eu.start()
    await us.start()
    settings = make_settings(nats_server, livekit_server).model_copy(update={"region": "eu-central"})
    # Beats every 0.2 s, dead after 3 missed: 0.6 s. The region is lost after 4 s of silence.
    config = make_config(region_lost_after_s=4.0)
    try:
        async with running_orchestrator(settings, config):
            kv = await open_bucket(js)
            created = RoomCreated(room="ornina-us-cut", region="us-east")
            await publish_created_room(js, livekit_server, created)
            rec = await wait_for_record(kv, "ornina-us-cut", {S.DISPATCHED})
            assert rec.pool == "us-east-a" and rec.dispatch_id
            await us.report("ornina-us-cut", rec.dispatch_id, 1, "joined")
            await us.report("ornina-us-cut", rec.dispatch_id, 1, "voice")
            await wait_for_record(kv, "ornina-us-cut", {S.SPEAKING})
            await us.stop()  # the whole of us-east goes silent (and its presence subject with it)
            silent_at = time.monotonic()
            # Five times the pool death limit: a local pool would have moved long before.
            watched = await wait_for_room(kv, "ornina-us-cut", lambda r: r.state != S.SPEAKING, 3.0)
            assert not watched.reached, watched.record
            # Lost: its rooms go abroad, as a dead pool's do.
            moved = await wait_for_record(kv, "ornina-us-cut", {S.DISPATCHED}, within=10.0)
            assert moved.pool == "eu-central-a" and moved.attempt == 2
            assert time.monotonic() - silent_at >= 3.0
            assert any(h.event == "redispatch" and "pool_dead" in h.detail for h in moved.history)
    finally:
        await eu.stop()


async def test_a_replica_started_with_its_region_runs_and_says_so(
    nats_server: NatsServer, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    # As deploy/ starts the eu-central replicas: SWITCHBOARD_REGION (= --region) in the environment.
    proc = OrchestratorProcess(
        tmp_path / "orch", nats_server.url, livekit_server, make_config(), {"SWITCHBOARD_REGION": "us-east"}
    )
    await asyncio.to_thread(proc.start)  # ready: a member, partitions replayed
    try:
        log = proc.log_text()
        assert "region us-east: pools of other regions are judged across the NATS gateways" in log
        assert "a region silent as a whole is lost after 30 s" in log
    finally:
        await asyncio.to_thread(proc.stop)


def test_an_unknown_region_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "switchboard.yaml").write_text(
        "regions: {eu-central: {}, us-east: {}}\nrules: [{name: all, match: '*', agent: ornina}]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    proc = subprocess.run(
        [SWITCHBOARD, "orchestrator", "--region", "mars"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "region 'mars'" in proc.stderr and "eu-central, us-east" in proc.stderr


@pytest.mark.parametrize("command", ["orchestrator", "ingest"])
def test_per_region_state_without_a_region_is_refused_saying_what_to_set(
    command: str, tmp_path: Path
) -> None:
    (tmp_path / "switchboard.yaml").write_text(
        "state: per_region\nregions: {eu-central: {}, us-east: {}}\n"
        "rules: [{name: all, match: '*', agent: ornina}]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env |= {"LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "a-secret-of-enough-length-for-livekit"}
    proc = subprocess.run(
        [SWITCHBOARD, command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "state: per_region" in proc.stderr and "SWITCHBOARD_REGION" in proc.stderr
    assert "a-secret-of-enough-length" not in proc.stderr
