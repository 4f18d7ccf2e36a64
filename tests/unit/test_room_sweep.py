"""The reconciler's sweep prunes the pool registry: long-silent workers are forgotten, and the
liveness judgements the sweep makes from the registry stay what they were."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from orchestrator.index import RoomIndex
from orchestrator.livekit_gateway import LiveKitGateway
from orchestrator.pools import FORGET_AFTER_S, PoolRegistry
from orchestrator.records import RoomRecord, RoomState
from orchestrator.room import Clocks, Reconciler
from orchestrator.room.decide import due
from orchestrator.room.sweep import Sweep
from orchestrator.store import RoomStore, Versioned
from shared.config import SwitchboardConfig
from shared.messages import PoolHeartbeat


def beat(pool: str, worker: str) -> PoolHeartbeat:
    return PoolHeartbeat(
        pool=pool,
        agent="ornina",
        region="eu-central",
        agent_name=f"ornina.{pool}",
        worker=worker,
        capacity=4,
        active=1,
        load=0.25,
        draining=False,
        version="1",
        at=datetime(2025, 1, 1, tzinfo=UTC),
    )


class Sweeper:
    """A reconciler on a hand-driven clock, with no KV and no LiveKit: with nothing to act on, the
    sweep touches neither. The rooms it picks are recorded, with why, instead of reconciled."""

    def __init__(self) -> None:
        self.now = 0.0
        self.registry = PoolRegistry(heartbeat_interval_s=1.0, dead_after_missed_beats=3)
        self.index = RoomIndex()
        self.controller = Reconciler(
            store=cast(RoomStore, None),
            gateway=cast(LiveKitGateway, None),
            config=SwitchboardConfig(),
            registry=self.registry,
            index=self.index,
            replica="r1",
            clocks=Clocks(wall=lambda: 1_000_000.0 + self.now, mono=lambda: self.now),
        )
        self.redispatched: list[tuple[str, str]] = []

        async def reconcile(room: str) -> None:
            current = self.index.get(room)
            assert current is not None
            rec, r = current, self.controller
            cause = due(
                rec, r.clocks.wall(), replica="r1", pool_gone=r.pool_gone(rec.pool), assign_check_s=8.0
            )
            self.redispatched.append((room, cause or ""))

        cast(Any, self.controller).reconcile = reconcile

    def run_until(self, until: float, *beats: tuple[str, str]) -> None:
        """Advance the clock to ``until`` one second at a time, ``beats`` arriving every second."""
        while self.now < until:
            self.now = min(until, self.now + 1.0)
            for pool, worker in beats:
                self.registry.observe(beat(pool, worker), self.now)
        asyncio.run(self.controller.sweep())

    def speaking_on(self, room: str, pool: str) -> None:
        rec = RoomRecord(room=room, state=RoomState.SPEAKING, pool=pool, rule="r", agent="ornina")
        self.index.apply(room, Versioned(rec, 1))


def test_a_worker_that_stopped_beating_is_forgotten_after_the_horizon() -> None:
    s = Sweeper()
    s.registry.observe(beat("eu-a", "w-old"), 0.0)
    s.speaking_on("room-a", "eu-a")
    witness = ("eu-b", "w-b")  # another pool keeps beating: this replica hears

    s.run_until(10.0, witness)
    dead = s.registry.view("eu-a", s.now)
    assert dead is not None and dead.liveness == "dead"  # dead, still remembered
    assert s.redispatched == [("room-a", "pool_dead")]

    s.run_until(FORGET_AFTER_S - 1.0, witness)
    assert s.registry.view("eu-a", s.now) is not None
    s.redispatched.clear()
    s.run_until(FORGET_AFTER_S, witness)
    assert s.registry.view("eu-a", s.now) is None  # forgotten by the sweep
    assert [v.pool for v in s.registry.snapshot(s.now)] == ["eu-b"]
    # Judged as before: the pool is gone, so a room still placed on it is failed over.
    assert s.redispatched == [("room-a", "pool_dead")]
    live = s.registry.view("eu-b", s.now)
    assert live is not None and live.liveness == "alive" and live.workers == 1

    # A forgotten worker that beats again is back at once.
    s.registry.observe(beat("eu-a", "w-old"), s.now)
    back = s.registry.view("eu-a", s.now)
    assert back is not None and back.liveness == "alive"


def test_a_deaf_replica_forgets_nobody_and_kills_nobody() -> None:
    s = Sweeper()
    s.registry.observe(beat("eu-a", "w1"), 0.0)
    s.speaking_on("room-a", "eu-a")
    s.run_until(FORGET_AFTER_S * 10)  # not one beat heard in all that time
    view = s.registry.view("eu-a", s.now)
    assert view is not None and view.liveness == "alive"
    assert s.redispatched == []


@pytest.mark.parametrize("silent_s", [FORGET_AFTER_S - 1.0, FORGET_AFTER_S])
def test_one_of_two_workers_falling_silent_never_changes_the_pool_view(silent_s: float) -> None:
    s = Sweeper()
    s.registry.observe(beat("eu-a", "w-gone"), 0.0)
    s.speaking_on("room-a", "eu-a")
    s.run_until(silent_s, ("eu-a", "w-live"))
    view = s.registry.view("eu-a", s.now)
    assert view is not None and (view.liveness, view.workers, view.capacity) == ("alive", 1, 4)
    assert s.redispatched == []


def test_one_room_failing_in_a_sweep_never_cancels_the_others() -> None:
    """3. A NATS timeout, an unreadable record or a bug in one room's step is that room's alone."""
    s = Sweeper()
    s.registry.observe(beat("eu-a", "w1"), 0.0)
    for room in ("room-a", "room-b", "room-c"):
        s.speaking_on(room, "eu-gone")  # a pool nobody knows: every room is due
    finished: list[str] = []

    async def reconcile(room: str) -> None:
        if room == "room-b":
            raise TimeoutError("nats: timeout")
        await asyncio.sleep(0.01)  # the others are mid-call when room-b fails
        finished.append(room)

    cast(Any, s.controller).reconcile = reconcile
    asyncio.run(s.controller.sweep())
    assert sorted(finished) == ["room-a", "room-c"]


def test_the_loop_waits_while_the_index_loads_then_wakes_at_the_next_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop sleeps until the index's next wake-up (not a fixed interval), never spins on the
    past wake-ups of an index still loading, and a room still due waits for the next boundary."""
    s = Sweeper()
    s.registry.observe(beat("eu-a", "w1"), 0.0)
    wall = s.controller.clocks.wall()
    joined = RoomRecord(
        room="room-a", state=RoomState.JOINED, pool="eu-a", rule="r", agent="ornina", deadline=wall - 5
    )
    s.index.apply("room-a", Versioned(joined, 1))
    later = joined.model_copy(update={"room": "room-b", "deadline": wall + 0.1})
    s.index.apply("room-b", Versioned(later, 2))
    loading = [True, True]  # ready() answers False while this has items
    waits: list[float] = []

    async def pause(_: Sweep, delay: float) -> None:
        waits.append(round(delay, 3))
        if len(waits) >= 8:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    def ready() -> bool:
        return not (loading and loading.pop())

    monkeypatch.setattr(Sweep, "_pause", pause)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(s.controller.sweep_loop(ready))
    interval = SwitchboardConfig().orchestrator.sweep_interval_s
    # Loading: each pass that finds the index not ready waits an interval, however late room-a is.
    assert waits[:4] == [0.0, interval, 0.0, interval]
    # Ready: room-a (overdue) at once; then room-b's own time (0.1 s on), not a whole interval.
    assert waits[4] == 0.0
    assert 0.0 < waits[5] <= 0.1
    assert [room for room, _ in s.redispatched][:1] == ["room-a"]


def test_a_poke_looks_at_deaths_at_once() -> None:
    """A worker seen gone (orchestrator/worker_presence.py) pokes the sweep: it looks at the dead
    pool's rooms now, not at the next interval's boundary."""
    s = Sweeper()
    s.registry.observe(beat("eu-a", "w1"), 0.0)
    joined = RoomRecord(room="room-a", state=RoomState.JOINED, pool="eu-a", rule="r", agent="ornina")
    s.index.apply("room-a", Versioned(joined, 1))
    sweep = s.controller._sweep

    async def scenario() -> list[str]:
        stepped = asyncio.Event()
        step = s.controller.reconcile

        async def noted(room: str) -> None:
            await step(room)
            stepped.set()

        s.controller.reconcile = noted  # type: ignore[method-assign]
        async with asyncio.TaskGroup() as tg:
            loop = tg.create_task(s.controller.sweep_loop(lambda: True))
            await asyncio.sleep(0.05)  # the first pass is done
            # The hand-driven clock stands still: without the poke, deaths are never looked at again.
            assert s.registry.mark_gone("eu-a", "w1", 0.0, 0.0)
            sweep.poke()
            async with asyncio.timeout(5):
                await stepped.wait()
            loop.cancel()
        return [room for room, _ in s.redispatched]

    assert asyncio.run(scenario()) == ["room-a"]
