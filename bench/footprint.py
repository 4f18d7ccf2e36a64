"""Measure 7 — footprint: orchestrator memory per tracked room, worker memory idle and per job.

Orchestrator, method: one real room is taken through the real path (a ``switchboard orchestrator``
replica, the Twirp stand-in as LiveKit, a stand-in pool that reports joined and voice) to get a
realistic ``speaking`` record (rule, decision with candidates, dispatch, join, voice in its
history). Copies of it under other room names are written straight into the KV bucket — 10,000,
then 100,000 live rooms — while the stand-in pool keeps heartbeating (so no room fails over).
For each size a fresh replica is started and measured once its room index has synced (/readyz):
RSS and PSS of the process, minus the same replica's figures with one room; the KV stream's
bytes per record; the CPU the idle replica spends (its sweep walks every live room 4x a second).

Worker, method: ``scripts/measure-worker``'s own ``measure()`` (thread executor, a fresh run):
idle RSS/PSS of the worker's process group and the growth per active job (2 jobs with listeners).
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.js.errors import KeyNotFoundError

from bench.common import (
    REPO,
    Orchestrator,
    StandIn,
    StandInPool,
    cpu_seconds,
    group_memory_kb,
    livekit_server,
    nats_client,
    nats_server,
    write_config,
)
from orchestrator.records import RoomRecord, RoomState
from orchestrator.store import open_bucket, room_key
from shared import bus, subjects
from shared.messages import AgentStatus, RoomCreated

_SECRET = "bench-standin-secret-0123456789abcdef"
TEMPLATE = "fp-template"


async def _measure_replica(
    orch: Orchestrator, settle_s: float = 3.0, cpu_window_s: float = 5.0
) -> dict[str, Any]:
    t0 = time.monotonic()
    await asyncio.to_thread(orch.start, 300.0)
    ready_s = time.monotonic() - t0
    await asyncio.sleep(settle_s)
    cpu0 = cpu_seconds(orch.pid)
    await asyncio.sleep(cpu_window_s)
    cpu = (cpu_seconds(orch.pid) - cpu0) / cpu_window_s
    _, rss, pss = group_memory_kb(orch.pid)
    return {"ready_s": ready_s, "rss_kb": rss, "pss_kb": pss, "idle_cpu": cpu}


async def _template(js: Any, kv: Any) -> bytes:
    await bus.publish_room_created(js, RoomCreated(room=TEMPLATE, region="eu-central"))
    rec = await _wait_state(kv, {RoomState.DISPATCHED})
    for state in ("joined", "voice"):
        await bus.publish_status(
            js,
            AgentStatus(
                room=TEMPLATE,
                dispatch_id=rec.dispatch_id or "",
                attempt=rec.attempt,
                pool=rec.pool or "eu-central-a",
                worker="eu-central-a-w1",
                state=state,
                at=datetime.now(UTC),
                identity="agent-AJ_bench0001",
            ),
        )
    await _wait_state(kv, {RoomState.SPEAKING})
    entry = await kv.get(room_key(TEMPLATE))
    return bytes(entry.value)


async def _wait_state(kv: Any, states: set[RoomState], within: float = 20) -> RoomRecord:
    async with asyncio.timeout(within):
        while True:
            try:
                entry = await kv.get(room_key(TEMPLATE))
                rec = RoomRecord.model_validate_json(entry.value)
                if rec.state in states:
                    return rec
            except KeyNotFoundError:
                pass
            await asyncio.sleep(0.05)


async def _load(js: Any, template: bytes, start: int, stop: int) -> None:
    text = template.decode()
    for i in range(start, stop):
        room = f"fp-{i:07d}"
        await js.publish_async(
            f"$KV.{subjects.ROOMS_BUCKET}.{room_key(room)}", text.replace(TEMPLATE, room).encode()
        )
    await js.publish_async_completed()


async def orchestrator_footprint(work: Path, sizes: tuple[int, ...]) -> dict[str, Any]:
    # The resync is off: the copies written straight into KV are rooms the Twirp stand-in never
    # heard of (a pass would end them all, `room_gone`); what a pass costs is Measure 8.
    config = write_config(
        work / "switchboard.yaml", match="fp-*", heartbeat_interval_s=1.0, resync_interval_s=0
    )
    rows: list[dict[str, Any]] = []
    with nats_server(work, "nats-footprint") as ns:
        standin = StandIn(work)
        standin.start()
        try:
            async with nats_client(ns.url) as nc:
                pool = StandInPool(nc, "eu-central-a", capacity=100_000)
                await pool.start()
                try:
                    js = nc.jetstream(publish_async_max_pending=4000)
                    first = Orchestrator(
                        work, config, ns.url, standin.url, "devkey", _SECRET, name="orch-template"
                    )
                    await asyncio.to_thread(first.start, 90.0)
                    try:
                        kv = await open_bucket(js)
                        template = await _template(js, kv)
                    finally:
                        await asyncio.to_thread(first.stop)
                    base = await _measure_one(work, config, ns.url, standin.url, "orch-base")
                    base["rooms"] = 1
                    rows.append(base)
                    loaded = 0
                    for size in sizes:
                        t0 = time.monotonic()
                        await _load(js, template, loaded, size)
                        load_s = time.monotonic() - t0
                        loaded = size
                        info = await js.stream_info(f"KV_{subjects.ROOMS_BUCKET}")
                        row = await _measure_one(work, config, ns.url, standin.url, f"orch-{size}")
                        row.update(
                            {
                                "rooms": size + 1,
                                "load_s": load_s,
                                "kv_bytes": info.state.bytes,
                                "kv_msgs": info.state.messages,
                                "kv_bytes_per_room": info.state.bytes / max(1, info.state.messages),
                                "rss_kb_per_room": (row["rss_kb"] - base["rss_kb"]) / size,
                                "pss_kb_per_room": (row["pss_kb"] - base["pss_kb"]) / size,
                            }
                        )
                        rows.append(row)
                        print(
                            f"  orchestrator with {size:>7,} rooms: RSS {row['rss_kb'] / 1024:.0f} MB "
                            f"(+{row['rss_kb_per_room']:.2f} kB/room), "
                            f"KV {row['kv_bytes_per_room']:.0f} B/room, "
                            f"synced in {row['ready_s']:.1f} s, idle CPU {row['idle_cpu']:.0%}",
                            flush=True,
                        )
                finally:
                    await pool.stop()
        finally:
            standin.stop()
    return {"template_record_bytes": len(template), "rows": rows}


async def _measure_one(work: Path, config: Path, nats_url: str, url: str, name: str) -> dict[str, Any]:
    orch = Orchestrator(work, config, nats_url, url, "devkey", _SECRET, name=name, log_level="WARNING")
    try:
        return await _measure_replica(orch)
    finally:
        await asyncio.to_thread(orch.stop)


async def worker_footprint(work: Path, dispatches: int) -> dict[str, Any]:
    loader = importlib.machinery.SourceFileLoader("measure_worker", str(REPO / "scripts" / "measure-worker"))
    spec = importlib.util.spec_from_loader("measure_worker", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    with livekit_server(work, "livekit-worker") as lk, nats_server(work, "nats-worker") as ns:
        r: dict[str, Any] = await module.measure("thread", dispatches, lk, ns.url, work / "measure-worker")
    jobs = int(module.MEMORY_JOBS)
    (_, idle_rss, idle_pss), (_, busy_rss, busy_pss) = r["idle"], r["busy"]
    out = {
        "executor": "thread",
        "dispatches": dispatches,
        "idle_processes": r["idle"][0],
        "idle_rss_mb": idle_rss / 1024,
        "idle_pss_mb": idle_pss / 1024,
        "per_job_rss_mb": (busy_rss - idle_rss) / 1024 / jobs,
        "per_job_pss_mb": (busy_pss - idle_pss) / 1024 / jobs,
        "jobs_measured": jobs,
        "joined_p50_s": r["joined_p50"],
        "voice_p50_s": r["voice_p50"],
        "start_to_registered_s": r["ready_s"],
    }
    print(
        f"  worker (thread): idle RSS {out['idle_rss_mb']:.0f} MB / PSS {out['idle_pss_mb']:.0f} MB, "
        f"per job +{out['per_job_rss_mb']:.0f} MB RSS / +{out['per_job_pss_mb']:.0f} MB PSS",
        flush=True,
    )
    return out


async def run(work: Path, quick: bool = False) -> dict[str, Any]:
    sizes = (2_000, 10_000) if quick else (10_000, 100_000)
    return {
        "orchestrator": await orchestrator_footprint(work / "footprint", sizes),
        "worker": await worker_footprint(work / "footprint-worker", 2 if quick else 5),
    }
