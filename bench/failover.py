"""Measure 5 — failover: SIGKILL a pool with 10 (and 50) speaking rooms; time until each room's
listener hears the new agent, and where that time goes.

Method: real livekit-server and nats-server, the orchestrator as a ``switchboard orchestrator``
subprocess, two real worker pools of two worker processes each (default agent, thread executor): the doomed
``eu-central-a`` (2 × capacity 5, the rooms' home region) and ``us-east-a`` (2 × capacity 6, the
neighbour). A listener (LiveKit rtc SDK) sits in each of the 10 rooms. When all 10 are
``speaking`` on eu-central-a, both of its workers' process groups get SIGKILL. Recovery of a
room = the orchestrator's ``voice_at`` of the new attempt (the new agent's audio reached the
listener, as reported by its worker) − the kill time; the listener's own first audible frame
(RMS ≥ 0.01) from the new agent is recorded beside it. Same machine clock throughout.

Rows: the defaults (heartbeat 1 s, dead after 3 missed beats, or sooner by the presence probes
once a late worker's connection is gone) with 10 rooms and with 50; and 10 rooms with heartbeats
every 0.5 s (workers via ``SWITCHBOARD_WORKER_HEARTBEAT_INTERVAL_S``, orchestrator
``heartbeat_interval_s: 0.5``). Each recovered room is split into phases by its own timeline
(:data:`MARKS`): the orchestrator's history, the worker's job marks sent with its joined report,
and the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from bench.common import (
    Orchestrator,
    TimedListener,
    Worker,
    create_rooms,
    delete_rooms,
    livekit_server,
    nats_client,
    nats_server,
    summary,
    write_config,
)
from orchestrator.ops import recovery
from orchestrator.records import RoomRecord, RoomState
from orchestrator.store import open_bucket, room_key
from shared import bus
from shared.messages import RoomCreated

S = RoomState
WORKERS_PER_POOL = 2


async def _record(kv: KeyValue, room: str) -> RoomRecord | None:
    try:
        entry = await kv.get(room_key(room))
    except KeyNotFoundError:
        return None
    return RoomRecord.model_validate_json(entry.value) if entry.value else None


# A recovered room's moments, in order, in seconds since the SIGKILL: the room's own timeline
# (orchestrator.ops.recovery, as `switchboard drill kill-pool` prints it), its last phase timed by
# the listener itself rather than by the worker's voice report.
MARKS = (
    *recovery.MARKS[:-1],
    ("listener_heard", "first audio", "the listener's first audible frame from the new agent"),
)


def marks(name: str, rec: RoomRecord | None, killed_at: float, listener: TimedListener) -> dict[str, Any]:
    if rec is None:
        return {"room": name, "recovered_s": None}
    at = recovery.recovery_marks(rec, killed_at)
    heard = listener.first_audible.get(rec.identity or "")
    return {
        "room": name,
        "new_pool": rec.pool,
        "attempt": rec.attempt,
        **{f"{mark}_s": at[mark] for mark, _, _ in recovery.MARKS[:-1]},
        "recovered_s": at["speaking"],
        "listener_heard_s": heard - killed_at if heard else None,
    }


def phase_summary(timeline: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Each phase's duration per recovered room, p50/p99/max over the rooms."""
    spans: dict[str, list[float]] = {phase: [] for _, phase, _ in MARKS}
    for t in timeline:
        if t.get("recovered_s") is None:
            continue
        at = {mark: t.get(f"{mark}_s") for mark, _, _ in MARKS}
        for phase, seconds in recovery.phase_durations(at, MARKS):
            if seconds is not None:
                spans[phase].append(seconds)
    return {phase: summary(values) for phase, values in spans.items()}


async def row(work: Path, lk: Any, heartbeat_s: float, rooms: int) -> dict[str, Any]:
    tag = f"hb{heartbeat_s:g}-{rooms}".replace(".", "_")
    work = work / tag
    config = write_config(
        work / "switchboard.yaml",
        match="fo-*",
        heartbeat_interval_s=heartbeat_s,
        dead_after_missed_beats=3,
        join_deadline_s=20,
        voice_deadline_s=30,
        dispatch_deadline_s=5,
        assign_check_s=8,
    )
    env = {"SWITCHBOARD_WORKER_HEARTBEAT_INTERVAL_S": str(heartbeat_s)}
    names = [f"fo-{tag}-{i}" for i in range(rooms)]
    with nats_server(work) as ns:
        # Two worker processes per pool, as a pool is deployed: LiveKit spreads the pool's jobs over them.
        per_doomed, per_survivor = -(-rooms // WORKERS_PER_POOL), -(-(rooms + 2) // WORKERS_PER_POOL)

        def pool_workers(tag: str, pool: str, region: str, capacity: int) -> list[Worker]:
            return [
                Worker(lk, ns.url, work / f"{tag}-{k}", pool, region=region, capacity=capacity, extra_env=env)
                for k in range(WORKERS_PER_POOL)
            ]

        doomed = pool_workers("doomed", "eu-central-a", "eu-central", per_doomed)
        survivor = pool_workers("survivor", "us-east-a", "us-east", per_survivor)
        workers = [*doomed, *survivor]
        orch = Orchestrator(work, config, ns.url, lk.http_url, lk.api_key, lk.api_secret)
        listeners = [TimedListener(lk, name) for name in names]
        try:
            await asyncio.gather(*(asyncio.to_thread(w.start) for w in workers))
            await asyncio.to_thread(orch.start, 90.0)
            async with nats_client(ns.url) as nc:
                js = nc.jetstream()
                kv = await open_bucket(js)
                # The rooms are created first, as the backend announcing them does; then the users join.
                sids = await create_rooms(lk, names)
                # A few at a time: 50 first connects at once overran their timeout on 2 cores.
                gate = asyncio.Semaphore(8)

                async def join(listener: TimedListener) -> None:
                    async with gate:
                        await listener.connect()

                await asyncio.gather(*(join(listener) for listener in listeners))
                for name in names:
                    event = RoomCreated(room=name, sid=sids[name], region="eu-central")
                    await bus.publish_room_created(js, event)
                print(f"  {tag}: {rooms} listeners in their rooms; the rooms announced", flush=True)
                # The kill comes when every room speaks, or after SETTLE_S with those that do: a row
                # that cannot get all its rooms speaking still measures (and says) what it can.
                before: dict[str, RoomRecord] = {}
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SETTLE_S):
                        while len(before) < rooms:
                            for name in names:
                                rec = await _record(kv, name)
                                if rec is not None and rec.state == S.SPEAKING:
                                    before[name] = rec
                            await asyncio.sleep(0.1)
                print(f"  {tag}: {len(before)} of {rooms} rooms speaking; SIGKILL", flush=True)
                affected = [n for n in names if n in before and before[n].pool == "eu-central-a"]
                await asyncio.sleep(1.0)  # speaking for a moment, as in production
                killed_at = time.time()
                for w in doomed:  # the whole pool: every worker's process group
                    w.kill()
                recovered: dict[str, RoomRecord] = {}
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(60):
                        while len(recovered) < len(affected):
                            for name in affected:
                                if name in recovered:
                                    continue
                                rec = await _record(kv, name)
                                # A new attempt: a room of the 50 may have needed two before the kill.
                                moved = rec is not None and rec.attempt > before[name].attempt
                                if rec is not None and moved and rec.state == S.SPEAKING:
                                    recovered[name] = rec
                            await asyncio.sleep(0.05)
                print(f"  {tag}: {len(recovered)} of {len(affected)} rooms speaking again", flush=True)
                await asyncio.sleep(0.5)  # let the listeners' first frames from new agents land
        finally:
            for listener in listeners:
                await listener.close()
            await asyncio.to_thread(orch.stop)
            await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))
            # Gone before the next row: its replica's resync would otherwise serve these rooms too.
            await delete_rooms(lk, names)
    timeline: list[dict[str, Any]] = []
    for name in affected:
        rec = recovered.get(name)
        listener = next(lis for lis in listeners if lis.room_name == name)
        timeline.append(marks(name, rec, killed_at, listener))
    # livekit rtc answers an FFI panic (e.g. a job's room connect starved for >10 s) with SIGTERM to
    # its own process: a worker that dies that way takes its rooms with it. Say so when it happened.
    worker_problems = []
    for w in workers:
        log = (w.workdir / f"worker-{w.pool}.log").read_text(errors="replace")
        if "FFI Panic" in log:
            worker_problems.append(f"{w.workdir.name} ({w.pool}): FFI Panic ({log.count('FFI Panic')}x)")
    times = [t["recovered_s"] for t in timeline if t["recovered_s"] is not None]
    heard_times = [t["listener_heard_s"] for t in timeline if t.get("listener_heard_s") is not None]
    return {
        "heartbeat_interval_s": heartbeat_s,
        "dead_after_missed_beats": 3,
        "workers_per_pool": WORKERS_PER_POOL,
        "dead_after_s": heartbeat_s * 3,
        "rooms": rooms,
        "pools_before_kill": dict(Counter(rec.pool or "-" for rec in before.values())),
        "not_speaking_at_kill": rooms - len(before),
        "affected": len(affected),
        "recovered": len(times),
        "recovery_s": summary(times),
        "listener_heard_s": summary(heard_times),
        "phases": phase_summary(timeline),
        "timeline": timeline,
        "worker_problems": worker_problems,
    }


# (heartbeat interval, rooms on the killed pool): the defaults with 10 and with 50 rooms (the
# issue's two goals), and 10 rooms with beats twice as fast.
ROWS = ((1.0, 10), (0.5, 10), (1.0, 50))


# A row that overruns this is left out (and said so) rather than taking the others with it.
ROW_LIMIT_S = {10: 200.0, 50: 480.0}
# How long the rooms get to speak before the kill; a room not speaking by then is not counted.
SETTLE_S = 120.0


async def run(work: Path, quick: bool = False) -> dict[str, Any]:
    rows = []
    with livekit_server(work, "livekit-failover") as lk:
        for heartbeat_s, rooms in ((1.0, 4),) if quick else ROWS:
            try:
                async with asyncio.timeout(ROW_LIMIT_S.get(rooms, 200.0)):
                    r = await row(work, lk, heartbeat_s, rooms)
            except TimeoutError:
                where = traceback.format_exc(limit=-3).strip().replace("\n", "\n    ")
                print(f"  heartbeat {heartbeat_s:g}s x3, {rooms} rooms: did not finish; left out", flush=True)
                print(f"    {where}", flush=True)
                continue
            rows.append(r)
            s, h = r["recovery_s"], r["listener_heard_s"]
            print(
                f"  heartbeat {heartbeat_s:g}s x3, {rooms} rooms: "
                f"{r['recovered']}/{r['affected']} recovered; "
                f"listener hears p50 {h['p50'] or 0:.2f}s p99 {h['p99'] or 0:.2f}s max {h['max'] or 0:.2f}s; "
                f"speaking p99 {s['p99'] or 0:.2f}s",
                flush=True,
            )
    return {"rows": rows}
