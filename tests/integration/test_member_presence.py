"""A crashed replica is known by its lost NATS connection, not only by its key's TTL; a replica
that is merely frozen keeps its membership (real nats-server and livekit-server, replicas started
as the README shows). member_ttl_s is 60 s here, so only the presence probes can explain a
departure seen within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from orchestrator.membership import PROBE_S, open_members_bucket
from shared import subjects
from tests.orchestratorkit import OrchestratorProcess, make_config

pytestmark = pytest.mark.integration

TTL_S = 60.0


class MemberKeys:
    """The members bucket as a watch sees it: live keys, and every delete (with its time)."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.deleted: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def follow(self, kv: KeyValue) -> None:
        watcher = await kv.watch("m.>")
        try:
            async for entry in watcher:
                if entry is None:
                    continue
                member = entry.key[2:]
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self.live.discard(member)
                    self.deleted[member] = time.monotonic()
                else:
                    self.live.add(member)
                self.changed.set()
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def until(self, holds: object, within: float) -> None:
        async with asyncio.timeout(within):
            while not holds():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


def _member_of(proc: OrchestratorProcess, members: set[str]) -> str:
    return next(m for m in members if f"-{proc.pid}-" in m)


async def test_a_sigkilled_replica_leaves_the_members_at_once_and_a_frozen_one_stays(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    js = nc.jetstream()
    config = make_config(member_ttl_s=TTL_S)
    procs = [
        OrchestratorProcess(tmp_path / name, nats_server.url, livekit_server, config, name=name)
        for name in ("orch-a", "orch-b", "orch-c")
    ]
    keys = MemberKeys()
    kv = await open_members_bucket(js, TTL_S)
    async with asyncio.TaskGroup() as tg:
        follow = tg.create_task(keys.follow(kv))
        try:
            for proc in procs:
                await asyncio.to_thread(proc.start)
            # A replica of an older build: it answers no probes and its key does not say it does.
            await js.publish(
                "$KV.switchboard_members.m.older-build", b'{"replica": "older-build"}', msg_ttl=TTL_S
            )
            await keys.until(lambda: len(keys.live) == 4, within=20)
            frozen, victim, survivor = procs
            frozen_id, victim_id = _member_of(frozen, keys.live), _member_of(victim, keys.live)
            announced = [json.loads((await kv.get(f"m.{m}")).value or b"{}") for m in (frozen_id, victim_id)]
            assert all(a.get("presence") is True for a in announced), announced

            # Frozen (SIGSTOP) for many probe periods: its subscription stays, so the probes only
            # time out, which proves nothing; nobody deletes its key.
            assert frozen.pid is not None
            os.kill(frozen.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(12 * PROBE_S)  # asserting that nothing happens meanwhile
            finally:
                os.kill(frozen.pid, signal.SIGCONT)
            assert frozen_id in keys.live and frozen_id not in keys.deleted

            # SIGKILLed: NATS drops its subscriptions with its connection; the next probe hears
            # "no responders" and the key goes, long before its 60 s TTL.
            victim.kill()
            killed_at = time.monotonic()
            await keys.until(lambda: victim_id in keys.deleted, within=15)
            assert keys.deleted[victim_id] - killed_at < TTL_S / 4
            assert keys.live == {frozen_id, _member_of(survivor, keys.live), "older-build"}
            assert "older-build" not in keys.deleted  # never probed: only its TTL judges it
            assert "has no connection to NATS" in frozen.log_text() + survivor.log_text()
        finally:
            follow.cancel()
            for proc in procs:
                with contextlib.suppress(Exception):
                    proc.stop()


async def test_a_lost_members_bucket_is_made_again_and_the_replicas_rejoin(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    """The members bucket is in memory: a NATS server that restarts comes back without it. Deleted
    here: the replicas make it again and their keys come back (no members means no replica
    tracks any partition, so no room's timers would fire)."""
    js = nc.jetstream()
    config = make_config()
    procs = [
        OrchestratorProcess(tmp_path / name, nats_server.url, livekit_server, config, name=name)
        for name in ("orch-a", "orch-b")
    ]
    try:
        for proc in procs:
            await asyncio.to_thread(proc.start)

        async def members() -> set[str]:
            with contextlib.suppress(Exception):  # no bucket, or no keys yet
                return {k[2:] for k in await (await js.key_value(subjects.MEMBERS_BUCKET)).keys()}
            return set()

        async with asyncio.timeout(15):
            while len(await members()) < 2:  # noqa: ASYNC110 (polling the bucket's keys)
                await asyncio.sleep(0.1)
        await js.delete_key_value(subjects.MEMBERS_BUCKET)
        assert not await members()
        async with asyncio.timeout(20):
            while len(await members()) < 2:  # noqa: ASYNC110 (polling the bucket's keys)
                await asyncio.sleep(0.1)
    finally:
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.stop()
