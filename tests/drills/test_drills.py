"""Fault drills against the real stack (see tests/drills/harness.py for the definitions).

Each drill runs twice over: a small ``fast`` variant in the default test run, and the ``full``
variant (``-m drill``, ``make drills``) that writes docs/drills/REPORT.md. Every fault and load loop
is bounded in count and time; everything runs on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.records import RoomRecord, RoomState
from shared import subjects
from tests.drills.faultproxy import FaultProxy, Mode
from tests.drills.harness import (
    DrillResult,
    Stack,
    drill_config,
    listeners,
    live_at,
    recoveries,
    save_result,
    stack,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Size:
    name: str
    rooms: int
    listeners: int
    processes: int  # worker processes per pool
    capacity: int  # jobs per worker process
    within_s: float
    executor: str  # how the workers run jobs (see Stack.start_pool)


FAST = Size("fast", rooms=12, listeners=1, processes=1, capacity=10, within_s=150, executor="process")
FULL = Size("full", rooms=200, listeners=3, processes=2, capacity=60, within_s=300, executor="thread")
SIZES = [
    pytest.param(FAST, id="fast"),
    pytest.param(FULL, id="full", marks=[pytest.mark.drill, pytest.mark.timeout(900)]),
]


def _assert_clean(result: DrillResult) -> None:
    assert result.lost == 0, result.summary()
    assert result.live_at_end == result.rooms_sent, result.summary()
    assert result.double_agents == 0, result.summary()
    assert result.samples > 0, "the double-agent sampler never sampled: " + result.summary()
    assert result.rooms_without_agent == 0, result.summary()
    assert result.speaking_at_end == result.listener_rooms, result.summary()
    assert not result.extra.get("secret_leaks"), result.summary()


def _history(rec: RoomRecord | None, event: str) -> int:
    return sum(1 for h in rec.history if h.event == event) if rec else 0


# ----------------------------------------------------------------------------------------------
# 1. SIGKILL one of three orchestrator replicas during a burst
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_drill_1_kill_orchestrator_replica(size: Size, tmp_path: Path) -> None:
    result = DrillResult("1 SIGKILL 1 of 3 orchestrator replicas mid-burst", size.name)
    started = time.monotonic()
    rooms = [f"ornina-d1-{i}" for i in range(size.rooms)]
    speak = rooms[: size.listeners]
    async with stack(tmp_path, drill_config()) as s:
        await _two_eu_pools(s, size)
        replicas = await s.start_orchestrators(3)
        async with listeners(s, speak):
            half = size.rooms // 2
            await s.publish_all(rooms[:half])
            killed_at = time.time()
            replicas[0].process.kill()
            await s.publish_all(rooms[half:])
            records = await s.wait_settled(rooms, size.within_s, speaking=speak)
            await s.finish(result, rooms, records, speak)
        in_flight = [r for r in rooms[:half] if (live_at(records[r]) or 0) > killed_at]
        result.recovery_s = recoveries(records, in_flight, killed_at)
        result.extra["taken_over"] = sum(1 for r in rooms if _history(records[r], "resume"))
        result.notes.append(
            "recovery: rooms of the first half not yet live at the kill, kill -> live; "
            "taken_over: rooms whose in-flight step another replica resumed after the lease ran out"
        )
    result.duration_s = time.monotonic() - started
    save_result(result)
    _assert_clean(result)


# ----------------------------------------------------------------------------------------------
# 2. Restart nats-server (file store) mid-burst
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_drill_2_restart_nats_server(size: Size, tmp_path: Path) -> None:
    result = DrillResult("2 restart nats-server (file store, SIGKILL) mid-burst", size.name)
    started = time.monotonic()
    rooms = [f"ornina-d2-{i}" for i in range(size.rooms)]
    speak = rooms[: size.listeners]
    async with stack(tmp_path, drill_config()) as s:
        await _two_eu_pools(s, size)
        await s.start_orchestrators(2)
        async with listeners(s, speak):
            half = size.rooms // 2
            await s.publish_all(rooms[:half])
            killed_at = time.time()
            node = s.nodes[0]
            node.kill()
            await asyncio.sleep(2.0)  # the outage
            await asyncio.to_thread(node.start)
            back_at = time.time()
            await s.publish_all(rooms[half:])
            records = await s.wait_settled(rooms, size.within_s, speaking=speak)
            await s.finish(result, rooms, records, speak)
        in_flight = [r for r in rooms[:half] if (live_at(records[r]) or 0) > killed_at]
        result.recovery_s = recoveries(records, in_flight, killed_at)
        result.extra["outage_s"] = round(back_at - killed_at, 2)
        result.notes.append("recovery: rooms of the first half not yet live at the kill, kill -> live")
    result.duration_s = time.monotonic() - started
    save_result(result)
    _assert_clean(result)


# ----------------------------------------------------------------------------------------------
# 3. Kill the stream leader of a 3-node NATS cluster mid-burst
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_drill_3_kill_stream_leader(size: Size, tmp_path: Path) -> None:
    result = DrillResult("3 SIGKILL the rooms stream leader of a 3-node NATS cluster (R3)", size.name)
    started = time.monotonic()
    rooms = [f"ornina-d3-{i}" for i in range(size.rooms)]
    speak = rooms[: size.listeners]
    async with stack(tmp_path, drill_config(), cluster=True) as s:
        await _two_eu_pools(s, size)
        await s.start_orchestrators(2)
        async with listeners(s, speak):
            half = size.rooms // 2
            await s.publish_all(rooms[:half])
            assert s.js is not None
            info = await s.js.stream_info(subjects.ROOMS_STREAM)
            assert info.config.num_replicas == 3 and info.cluster is not None
            leader = info.cluster.leader
            killed_at = time.time()
            next(n for n in s.nodes if n.name == leader).kill()
            first = await s.publish(rooms[half])
            await s.publish_all(rooms[half + 1 :])
            records = await s.wait_settled(rooms, size.within_s, speaking=speak)
            await s.finish(result, rooms, records, speak)
            new_leader = (await s.js.stream_info(subjects.ROOMS_STREAM)).cluster
        in_flight = [r for r in rooms[:half] if (live_at(records[r]) or 0) > killed_at]
        result.recovery_s = recoveries(records, in_flight, killed_at)
        result.extra["killed_leader"] = leader
        result.extra["new_leader"] = new_leader.leader if new_leader else None
        result.extra["publish_accepted_again_after_s"] = round(first - killed_at, 2)
        result.notes.append("recovery: rooms of the first half not yet live at the kill, kill -> live")
    result.duration_s = time.monotonic() - started
    save_result(result)
    _assert_clean(result)


# ----------------------------------------------------------------------------------------------
# 4. LiveKit API down / slow / resetting (a fault proxy in front of the real livekit-server)
# ----------------------------------------------------------------------------------------------

FAULTS: list[tuple[Mode, float]] = [("down", 0.0), ("slow", 2.0), ("slow", 7.0), ("reset", 0.0)]


@pytest.mark.parametrize("size", SIZES)
async def test_drill_4_livekit_api_faults(size: Size, tmp_path: Path) -> None:
    result = DrillResult("4 LiveKit API down 5 s / slow 2 s / slow 7 s / resetting", size.name)
    started = time.monotonic()
    per_fault = max(3, size.rooms // (2 * len(FAULTS)))
    rooms: list[str] = []
    phase_of: dict[str, tuple[str, float]] = {}
    async with stack(tmp_path, drill_config()) as s:
        assert s.livekit is not None
        await _two_eu_pools(s, size)
        async with FaultProxy("127.0.0.1", s.livekit.port) as proxy:
            await s.start_orchestrators(2, livekit_url=proxy.url)
            for n, (mode, delay) in enumerate(FAULTS):
                batch = [f"ornina-d4-{n}-{mode}-{i}" for i in range(per_fault)]
                await proxy.set_mode(mode, delay_s=delay)
                await s.publish_all(batch)
                await asyncio.sleep(5.0)  # the fault lasts 5 s
                await proxy.set_mode("pass")
                ended = time.time()
                label = f"{mode} {delay:g}s" if mode == "slow" else mode
                phase_of.update({r: (label, ended) for r in batch})
                rooms += batch
            records = await s.wait_settled(rooms, size.within_s)
            await s.finish(result, rooms, records)
            result.extra["connections_by_mode"] = dict(proxy.connections)
    rounds = {r: _history(records[r], "dispatch_error") for r in rooms}
    tries = {r: _tries(records[r]) for r in rooms}
    result.recovery_s = [
        max(0.0, t - phase_of[r][1]) for r in rooms if (t := live_at(records[r])) is not None
    ]
    result.extra["max_dispatch_rounds"] = max(rounds.values(), default=0)
    result.extra["max_create_dispatch_tries_in_last_round"] = max(tries.values(), default=0)
    result.extra["per_fault"] = {
        label: {
            "rooms": sum(1 for r in rooms if phase_of[r][0] == label),
            "live": sum(1 for r in rooms if phase_of[r][0] == label and live_at(records[r]) is not None),
            "max_rounds": max((rounds[r] for r in rooms if phase_of[r][0] == label), default=0),
        }
        for label in dict.fromkeys(v[0] for v in phase_of.values())
    }
    result.notes.append(
        "recovery: fault end -> live (0 when the room went live during a slow phase); rounds: "
        "CreateDispatch retry budgets (5 s each) a room used up before the one that worked"
    )
    result.duration_s = time.monotonic() - started
    save_result(result)
    _assert_clean(result)
    cfg = drill_config()["orchestrator"]
    assert result.extra["max_dispatch_rounds"] < 6, "retries bounded by max_dispatch_rounds"
    # One round lasts dispatch_deadline_s; tries back off from 0.1 s up to 1 s in it.
    assert result.extra["max_create_dispatch_tries_in_last_round"] <= 4 * cfg["dispatch_deadline_s"] + 2


def _tries(rec: RoomRecord | None) -> int:
    for h in reversed(rec.history if rec else []):
        if h.event == "dispatched" and " after " in h.detail:
            return int(h.detail.split(" after ")[1].split()[0])
    return 0


# ----------------------------------------------------------------------------------------------
# 5. SIGKILL a pool holding live rooms while another burst arrives
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
async def test_drill_5_kill_pool_during_burst(size: Size, tmp_path: Path) -> None:
    result = DrillResult("5 SIGKILL a pool holding live rooms while another burst arrives", size.name)
    started = time.monotonic()
    half = size.rooms // 2
    first = [f"ornina-d5-a-{i}" for i in range(half)]
    second = [f"ornina-d5-b-{i}" for i in range(size.rooms - half)]
    rooms = first + second
    async with stack(tmp_path, drill_config()) as s:
        doomed = await s.start_pool(
            "eu-central-a",
            "eu-central",
            processes=size.processes,
            capacity=size.capacity,
            executor=size.executor,
        )
        await s.start_pool(
            "eu-central-b",
            "eu-central",
            processes=size.processes,
            capacity=size.capacity,
            executor=size.executor,
        )
        await s.start_pool(
            "us-east-a", "us-east", processes=size.processes, capacity=size.capacity, executor=size.executor
        )
        await s.start_orchestrators(2)
        await s.publish_all(first)
        before = await s.wait_settled(first, size.within_s)
        on_doomed = [r for r in first if (rec := before[r]) and rec.pool == "eu-central-a"]
        assert on_doomed, "the first burst put no room on the pool to kill"
        speak = on_doomed[: size.listeners]
        async with listeners(s, speak):
            await s.wait_settled(speak, 60, speaking=speak)
            killed_at = time.time()
            for worker in doomed:
                worker.kill()
            await s.publish_all(second)
            records = await s.wait_settled(rooms, size.within_s, speaking=speak)
            # The moved rooms must be live on their *new* attempt.
            moved = {r: rec for r in on_doomed if (rec := records[r]) is not None}
            await s.finish(result, rooms, records, speak)
        result.recovery_s = recoveries(records, on_doomed, killed_at)
        result.extra["rooms_on_killed_pool"] = len(on_doomed)
        result.extra["moved_to"] = sorted({rec.pool or "-" for rec in moved.values()})
        result.extra["still_on_killed_pool"] = [r for r, rec in moved.items() if rec.pool == "eu-central-a"]
        result.notes.append("recovery: rooms on the killed pool, SIGKILL -> live again on another pool")
    result.duration_s = time.monotonic() - started
    save_result(result)
    _assert_clean(result)
    assert not result.extra["still_on_killed_pool"], result.summary()
    assert all(rec.state in (RoomState.JOINED, RoomState.SPEAKING) for rec in moved.values())


async def _two_eu_pools(s: Stack, size: Size) -> None:
    await asyncio.gather(
        s.start_pool(
            "eu-central-a",
            "eu-central",
            processes=size.processes,
            capacity=size.capacity,
            executor=size.executor,
        ),
        s.start_pool(
            "eu-central-b",
            "eu-central",
            processes=size.processes,
            capacity=size.capacity,
            executor=size.executor,
        ),
    )
