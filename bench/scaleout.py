"""Measure 6 — scale-out: rooms dispatched per second with 1, 2 and 3 orchestrator replicas.

Method: each replica is a real ``switchboard orchestrator --config`` subprocess (one shared durable
consumer, one KV bucket). Four stand-in pools heartbeat large capacities over NATS; the join and
assignment deadlines are set far out so nothing is redispatched. Once every replica is ready, N
``RoomCreated`` events are published as fast as the driver can (≤ 256 publishes in flight); a
core-NATS subscription on the KV bucket's subjects notes when each room's record first reaches
``dispatched`` (CreateDispatch answered, state written). Rate = N / (last dispatched − first
publish); "steady" = the middle 80 % of rooms over the time they took. Run against the real
livekit-server (the N rooms are created there first, untimed, as the backends that announce them
do; each dispatch asks LiveKit for its room before CreateDispatch) and against the Twirp stand-in,
each configuration with fresh servers; CPU seconds of every process are sampled to show which one
ran out of CPU first. The machine has 2 cores: replicas, NATS and LiveKit share them. The resync
is off: the rooms exist before the burst, and a pass would race their events (its own cost is
Measure 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from bench.common import (
    STANDIN_TIMINGS,
    Orchestrator,
    StandIn,
    StandInPool,
    cpu_seconds,
    create_rooms,
    livekit_server,
    nats_client,
    nats_server,
    write_config,
)
from shared import bus, subjects
from shared.messages import RoomCreated

_SECRET = "bench-standin-secret-0123456789abcdef"


async def one(work: Path, backend: str, replicas: int, rooms: int) -> dict[str, Any]:
    tag = f"{backend}-{replicas}"
    work = work / tag
    names = [f"so-{tag}-{i}" for i in range(rooms)]
    sids: dict[str, str] = {}  # the stand-in has every room it is asked about
    config = write_config(work / "switchboard.yaml", match="so-*", resync_interval_s=0, **STANDIN_TIMINGS)
    with contextlib.ExitStack() as stack:
        ns = stack.enter_context(nats_server(work))
        if backend == "livekit":
            lk = stack.enter_context(livekit_server(work))
            url, key, secret = lk.http_url, lk.api_key, lk.api_secret
            backend_pid = lk.process.pid if lk.process else None
            sids = await create_rooms(lk, names)
        else:
            standin = StandIn(work)
            standin.start()
            stack.callback(standin.stop)
            url, key, secret = standin.url, "devkey", _SECRET
            backend_pid = standin.process.pid if standin.process else None
        async with nats_client(ns.url) as nc:
            pools = [StandInPool(nc, f"eu-central-{c}", capacity=50_000) for c in "abcd"]
            for pool in pools:
                await pool.start()
            procs: list[Orchestrator] = []
            try:
                for i in range(replicas):
                    orch = Orchestrator(work, config, ns.url, url, key, secret, name=f"orchestrator-{i}")
                    procs.append(orch)
                    await asyncio.to_thread(orch.start, 90.0)
                dispatched: dict[str, float] = {}
                done = asyncio.Event()
                marker = b'"state":"dispatched"'

                async def on_kv(msg: Msg) -> None:
                    if marker in msg.data:
                        room = msg.subject.rsplit(".r.", 1)[-1]  # $KV.<bucket>.p<nn>.r.<room>
                        if room not in dispatched:
                            dispatched[room] = time.monotonic()
                            if len(dispatched) >= rooms:
                                done.set()

                sub = await nc.subscribe(f"$KV.{subjects.ROOMS_BUCKET}.>", cb=on_kv)
                js = nc.jetstream()
                slots = asyncio.Semaphore(256)

                async def publish(name: str) -> None:
                    async with slots:
                        event = RoomCreated(room=name, sid=sids.get(name), region="eu-central")
                        await bus.publish_room_created(js, event)

                pids = (
                    [p.pid for p in procs]
                    + ([backend_pid] if backend_pid else [])
                    + ([ns.process.pid] if ns.process and ns.process.pid else [])
                )
                cpu0 = {pid: cpu_seconds(pid) for pid in pids}
                t0 = time.monotonic()
                await asyncio.gather(*(publish(n) for n in names))
                published_s = time.monotonic() - t0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(rooms / 40 + 30):
                        await done.wait()
                wall = time.monotonic() - t0
                cpu = {pid: cpu_seconds(pid) - c for pid, c in cpu0.items()}
                await sub.unsubscribe()
            finally:
                for orch in procs:
                    await asyncio.to_thread(orch.stop)
                for pool in pools:
                    await pool.stop()
    times = sorted(t - t0 for t in dispatched.values())
    n = len(times)
    rate = n / times[-1] if n else 0.0
    lo, hi = int(n * 0.1), max(int(n * 0.9) - 1, 0)
    steady = (hi - lo) / (times[hi] - times[lo]) if n > 10 and times[hi] > times[lo] else None
    labels = [f"replica-{i}" for i in range(replicas)] + (["backend"] if backend_pid else []) + ["nats"]
    cpu_util = {label: cpu[pid] / wall for label, pid in zip(labels, pids, strict=False)}
    return {
        "backend": backend,
        "replicas": replicas,
        "rooms": rooms,
        "dispatched": n,
        "publish_s": published_s,
        "last_dispatched_s": times[-1] if n else None,
        "rooms_per_s": rate,
        "steady_rooms_per_s": steady,
        "cpu_util": cpu_util,  # CPU seconds per wall second over the run (1.0 = one core)
        "wall_s": wall,
    }


async def run(work: Path, quick: bool = False) -> dict[str, Any]:
    rooms = 150 if quick else 1000
    rows = []
    for backend in ("livekit", "standin"):
        for replicas in (1, 2, 3):
            row = await one(work, backend, replicas, rooms)
            rows.append(row)
            util = ", ".join(f"{k} {v:.2f}" for k, v in row["cpu_util"].items())
            print(
                f"  {backend:<8} x{replicas}: {row['rooms_per_s']:.0f} rooms/s "
                f"(steady {row['steady_rooms_per_s'] or 0:.0f}), {row['dispatched']}/{rooms} dispatched; "
                f"CPU {util}",
                flush=True,
            )
    return {"rooms_per_config": rooms, "rows": rows}
