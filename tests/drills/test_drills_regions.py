"""Region drills (issue 18), on two regions for real (tests/drills/regions.py): a NATS supercluster
of two clusters joined by gateways, two LiveKit nodes sharing Redis, per-region state, and replicas
and pools in each region. A small ``fast`` variant runs in the default test run, the ``full`` one
in ``make drills``; every fault is bounded and everything runs on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.records import RoomRecord, RoomState
from tests.drills.harness import DrillResult, live_at, recoveries, save_result
from tests.drills.regions import RegionStack, region_drill_config, region_listeners, region_stack
from tests.drills.test_drills import _assert_clean
from tests.supercluster import EU, US

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class RegionSize:
    name: str
    rooms: int  # per region, before the fault
    during: int  # per region, created during the fault
    listeners: int  # per region
    processes: int  # worker processes per pool
    capacity: int  # jobs per worker process
    replicas: int  # orchestrator replicas per region
    within_s: float
    executor: str


FAST = RegionSize(
    "fast",
    rooms=4,
    during=2,
    listeners=1,
    processes=1,
    capacity=8,
    replicas=1,
    within_s=150,
    executor="process",
)
FULL = RegionSize(
    "full",
    rooms=100,
    during=10,
    listeners=1,
    processes=2,
    capacity=60,
    replicas=2,
    within_s=300,
    executor="thread",
)
SIZES = [
    pytest.param(FAST, id="fast"),
    pytest.param(FULL, id="full", marks=[pytest.mark.drill, pytest.mark.timeout(900)]),
]
PARTITION_S = 15.0


async def _region_pool(s: RegionStack, pool: str, region: str, size: RegionSize) -> None:
    await s.start_pool(pool, region, processes=size.processes, capacity=size.capacity, executor=size.executor)


def _pool_region(rec: RoomRecord | None) -> str | None:
    if rec is None or rec.pool is None:
        return None
    return EU if rec.pool.startswith(EU) else US if rec.pool.startswith(US) else None


# ----------------------------------------------------------------------------------------------
# 9.1 Cut the gateway between the regions for 15 s
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_drill_9_1_gateway_partition(size: RegionSize, tmp_path: Path) -> None:
    result = DrillResult("9.1 cut the NATS gateway between two regions for 15 s", size.name)
    started = time.monotonic()
    before = {r: [f"ornina-d91-{r[:2]}-{i}" for i in range(size.rooms)] for r in (EU, US)}
    during = {r: [f"ornina-d91-{r[:2]}-cut-{i}" for i in range(size.during)] for r in (EU, US)}
    rooms = [room for r in (EU, US) for room in before[r] + during[r]]
    speak = [room for r in (EU, US) for room in before[r][: size.listeners]]
    async with region_stack(tmp_path, region_drill_config()) as s:
        await asyncio.gather(
            _region_pool(s, "eu-central-a", EU, size), _region_pool(s, "us-east-a", US, size)
        )
        for region in (EU, US):
            await s.start_region_orchestrators(region, size.replicas)
        for region in (EU, US):
            await s.publish_all(before[region], region)
        async with region_listeners(s, speak):
            settled = await s.wait_settled(
                [r for g in before.values() for r in g], size.within_s, speaking=speak
            )
            placed = {room: (rec.pool, rec.attempt) for room, rec in settled.items() if rec is not None}
            assert s.sc is not None
            await s.sc.cut()
            cut_at = time.time()
            # New rooms arrive in both regions while they are apart: each region's backend publishes
            # into its own region's cell.
            published = {}
            for region in (EU, US):
                published |= await s.publish_all(during[region], region)
            cut_rooms = [room for g in during.values() for room in g]
            in_cut = await s.wait_settled(cut_rooms, max(0.0, PARTITION_S - (time.time() - cut_at)))
            live_during_cut = [r for r in cut_rooms if live_at(in_cut.get(r)) is not None]
            await asyncio.sleep(max(0.0, PARTITION_S - (time.time() - cut_at)))  # the rest of the cut
            healed_at = time.time()
            await s.sc.heal()
            records = await s.wait_settled(rooms, size.within_s, speaking=speak)
            await s.finish(result, rooms, records, speak)
        moved = [
            room
            for room, (pool, attempt) in placed.items()
            if (rec := records.get(room)) is None or (rec.pool, rec.attempt) != (pool, attempt)
        ]
        abroad = [room for room in rooms if _pool_region(records.get(room)) not in (None, s.home[room])]
        result.extra["moved"] = moved[:20]
        result.extra["moved_count"] = len(moved)
        result.extra["served_abroad"] = abroad[:20]
        result.extra["in_other_region"] = await s.in_other_region(rooms)
        result.extra["cut_s"] = round(healed_at - cut_at, 1)
        result.extra["created_during_cut"] = len(cut_rooms)
        result.extra["live_before_heal"] = len(live_during_cut)
        result.recovery_s = [
            max(0.0, t - published[r]) for r in cut_rooms if (t := live_at(records.get(r))) is not None
        ]
        result.notes.append(
            "recovery: rooms created during the cut, published -> live (in their own region); "
            "moved: rooms live before the cut whose pool or attempt changed"
        )
    result.duration_s = time.monotonic() - started
    save_result(result)
    _assert_clean(result)
    assert not moved, result.summary()
    assert not abroad and not result.extra["in_other_region"], result.summary()
    assert len(live_during_cut) == len(cut_rooms), result.summary()


# ----------------------------------------------------------------------------------------------
# 9.3 SIGKILL a pool in one region: its rooms recover inside the region first
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_drill_9_3_pool_death_in_one_region(size: RegionSize, tmp_path: Path) -> None:
    result = DrillResult("9.3 SIGKILL a pool in one region of two", size.name)
    started = time.monotonic()
    rooms = [f"ornina-d93-{i}" for i in range(size.rooms)]
    async with region_stack(tmp_path, region_drill_config()) as s:
        doomed, *_ = await asyncio.gather(
            s.start_pool(
                "eu-central-a", EU, processes=size.processes, capacity=size.capacity, executor=size.executor
            ),
            _region_pool(s, "eu-central-b", EU, size),
            _region_pool(s, "us-east-a", US, size),
        )
        for region in (EU, US):
            await s.start_region_orchestrators(region, size.replicas)
        await s.publish_all(rooms, EU)
        before = await s.wait_settled(rooms, size.within_s)
        on_doomed = [r for r in rooms if (rec := before[r]) and rec.pool == "eu-central-a"]
        assert on_doomed, "no room on the pool to kill"
        speak = on_doomed[: size.listeners]
        async with region_listeners(s, speak):
            await s.wait_settled(speak, 60, speaking=speak)
            killed_at = time.time()
            for worker in doomed:
                worker.kill()
            records = await s.wait_settled(rooms, size.within_s, speaking=speak)
            await s.finish(result, rooms, records, speak)
        result.recovery_s = recoveries(records, on_doomed, killed_at)
        moved_to = sorted({rec.pool or "-" for r in on_doomed if (rec := records[r]) is not None})
        result.extra["rooms_on_killed_pool"] = len(on_doomed)
        result.extra["moved_to"] = moved_to
        result.notes.append(
            "recovery: rooms on the killed pool, SIGKILL -> live again; moved_to: their pools now"
        )
    result.duration_s = time.monotonic() - started
    save_result(result)
    _assert_clean(result)
    # Inside the region first: eu-central-b had room for all of them.
    assert moved_to == ["eu-central-b"], result.summary()
    moved = [records[r] for r in on_doomed]
    assert all(rec is not None and rec.state in (RoomState.JOINED, RoomState.SPEAKING) for rec in moved)
