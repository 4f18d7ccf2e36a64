"""Measure 4 — load spread: 200 rooms into 4 pools of unequal capacity, in a burst faster than a heartbeat.

Method: the real orchestrator (in this process) with the real livekit-server, and four stand-in
pools heartbeating over real NATS every 1 s with capacities 25/50/75/100 and no jobs (a stand-in
pool runs no LiveKit worker, so its heartbeats never show the rooms: only the orchestrator's
reservations — rooms placed but not yet in a heartbeat — keep the burst from herding). The 200
rooms are created in LiveKit first (untimed, as the backend announcing them does), then all 200
``RoomCreated`` events are published at once (the burst takes well under one heartbeat interval);
occupancy of a pool = rooms placed on it / its capacity. Compared: ``strategy: p2c`` (default)
and ``strategy: least_loaded`` in the real orchestrator (both with reservations), and, from the
pure scheduler on the same snapshot, what each strategy does with no reservations at all (every
room of the burst sees the last heartbeat only): the herding reservations exist to prevent.
The resync is off: the trials share one livekit-server, whose rooms of earlier trials match the
rule, and a pass would race the burst's own events for rooms older than its grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from livekit import api as lkapi

from bench.common import (
    AGENT,
    STANDIN_TIMINGS,
    StandInPool,
    config_dict,
    create_rooms,
    in_process_orchestrator,
    livekit_server,
    nats_client,
    nats_server,
)
from devstack.livekit_server import LiveKitServer
from orchestrator.records import RoomState
from orchestrator.scheduler import (
    PoolIndex,
    PoolView,
    ScheduleRequest,
    Strategy,
    Topology,
    decision_seed,
    schedule,
)
from shared import bus
from shared.config import parse_config
from shared.messages import RoomCreated
from shared.settings import LiveKitSettings, NatsSettings, Settings
from shared.subjects import pool_agent_name

CAPACITIES = {"eu-central-a": 25, "eu-central-b": 50, "eu-central-c": 75, "eu-central-d": 100}
ROOMS = 200
RESTING = {RoomState.DISPATCHED, RoomState.WAITING_FOR_POOL, RoomState.FAILED}


def spread_stats(placed: dict[str, int]) -> dict[str, Any]:
    occupancy = {p: placed.get(p, 0) / cap for p, cap in CAPACITIES.items()}
    mean = statistics.fmean(occupancy.values())
    return {
        "placed": {p: placed.get(p, 0) for p in CAPACITIES},
        "occupancy": occupancy,
        "max_over_mean": max(occupancy.values()) / mean if mean else None,
        "over_capacity_pools": [p for p, cap in CAPACITIES.items() if placed.get(p, 0) > cap],
        "over_capacity_rooms": sum(max(0, placed.get(p, 0) - cap) for p, cap in CAPACITIES.items()),
    }


def pure(strategy: Strategy, reserve: bool, trials: int) -> dict[str, Any]:
    """The pure scheduler on one heartbeat snapshot (all pools empty), rooms decided one by one."""
    topology = Topology("eu-central", {"eu-central": ("us-east",), "us-east": ("eu-central",)})
    views = [
        PoolView(p, AGENT, "eu-central", pool_agent_name(AGENT, p), 1, cap, 0, 0.0, False, "alive", 0.1)
        for p, cap in CAPACITIES.items()
    ]
    index = PoolIndex(views, topology)
    runs = []
    for trial in range(trials):
        placed: Counter[str] = Counter()
        for i in range(ROOMS):
            held = dict(placed) if reserve else {}
            d = schedule(
                ScheduleRequest(f"room-{i}", AGENT, "eu-central"),
                index,
                held,
                topology,
                decision_seed(trial, f"room-{i}", 1),
                strategy,
            )
            if d.pool is not None:
                placed[d.pool] += 1
        runs.append(spread_stats(dict(placed)))
    return _fold(runs)


def _fold(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [r["max_over_mean"] for r in runs if r["max_over_mean"] is not None]
    worst = max(runs, key=lambda r: (r["over_capacity_rooms"], r["max_over_mean"] or 0))
    return {
        "trials": len(runs),
        "max_over_mean_each": ratios,
        "max_over_mean_worst": max(ratios) if ratios else None,
        "max_over_mean_median": statistics.median(ratios) if ratios else None,
        "any_over_capacity": any(r["over_capacity_rooms"] for r in runs),
        "over_capacity_rooms_worst": worst["over_capacity_rooms"],
        "runs": runs,
    }


async def trial(work: Path, lk: LiveKitServer, strategy: str, n: int) -> dict[str, Any]:
    with nats_server(work, f"nats-{strategy}-{n}") as ns:
        settings = Settings(
            nats=NatsSettings(url=ns.url, startup_attempts=2),
            livekit=LiveKitSettings(
                url=lk.http_url, api_key=lk.api_key, api_secret=lk.api_secret, request_timeout_s=5.0
            ),
        )
        config = parse_config(
            config_dict(match="spread-*", **STANDIN_TIMINGS, strategy=strategy, resync_interval_s=0)
        )
        async with nats_client(ns.url) as nc:
            pools = [StandInPool(nc, p, capacity=cap, interval=1.0) for p, cap in CAPACITIES.items()]
            async with in_process_orchestrator(settings, config, pools) as service:
                js = nc.jetstream()
                rooms = [f"spread-{strategy}-{n}-{i}" for i in range(ROOMS)]
                sids = await create_rooms(lk, rooms)
                t0 = time.monotonic()
                await asyncio.gather(
                    *(
                        bus.publish_room_created(js, RoomCreated(room=r, sid=sids[r], region="eu-central"))
                        for r in rooms
                    )
                )
                burst_s = time.monotonic() - t0

                def settled() -> int:
                    return sum(
                        1 for r in rooms if (v := service.index.get(r)) is not None and v.state in RESTING
                    )

                for _ in range(1200):  # the in-process room index, polled for up to 60 s
                    if settled() >= ROOMS:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise TimeoutError(f"only {settled()}/{ROOMS} rooms placed after 60 s")
                all_placed_s = time.monotonic() - t0
                records = [v for r in rooms if (v := service.index.get(r)) is not None]
                placed = Counter(
                    rec.pool for rec in records if rec.state == RoomState.DISPATCHED and rec.pool
                )
                stats = spread_stats(dict(placed))
                stats.update(
                    {
                        "burst_publish_s": burst_s,
                        "all_dispatched_s": all_placed_s,
                        "not_dispatched": sum(1 for rec in records if rec.state != RoomState.DISPATCHED),
                    }
                )
                return stats


async def run(work: Path, quick: bool = False) -> dict[str, Any]:
    trials = 1 if quick else 3
    result: dict[str, Any] = {"capacities": CAPACITIES, "rooms": ROOMS, "heartbeat_interval_s": 1.0}
    with livekit_server(work, "livekit-spread") as lk:
        for strategy in ("p2c", "least_loaded"):
            runs = []
            for n in range(trials):
                runs.append(await trial(work, lk, strategy, n))
                r = runs[-1]
                print(
                    f"  {strategy:<12} trial {n}: max/mean {r['max_over_mean']:.3f}, over capacity "
                    f"{r['over_capacity_rooms']} rooms, burst {r['burst_publish_s'] * 1000:.0f} ms, "
                    f"all dispatched {r['all_dispatched_s']:.2f} s",
                    flush=True,
                )
            folded = _fold(runs)
            folded["burst_publish_s_max"] = max(r["burst_publish_s"] for r in runs)
            folded["all_dispatched_s_max"] = max(r["all_dispatched_s"] for r in runs)
            result[f"orchestrator_{strategy}"] = folded
        async with lkapi.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as api:
            with contextlib.suppress(Exception):
                listed = await api.room.list_rooms(lkapi.ListRoomsRequest())
                result["livekit_rooms_created"] = len(listed.rooms)
    for strategy in ("p2c", "least_loaded"):
        result[f"pure_{strategy}_no_reservations"] = pure(strategy, reserve=False, trials=trials)  # type: ignore[arg-type]
        result[f"pure_{strategy}_reservations"] = pure(strategy, reserve=True, trials=trials)  # type: ignore[arg-type]
    return result
