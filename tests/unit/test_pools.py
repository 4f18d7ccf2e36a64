"""Pool registry: heartbeats folded per pool; liveness from explicit `now` values."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime

import pytest

from orchestrator.ops.census import PoolCensus
from orchestrator.pools import FORGET_AFTER_S, PoolRegistry
from orchestrator.scheduler import PoolView
from shared.config import PinnedPool, SwitchboardConfig
from shared.messages import PoolHeartbeat

AT = datetime(2025, 1, 1, tzinfo=UTC)


def beat(
    worker: str,
    pool: str = "eu-a",
    capacity: int = 4,
    active: int = 0,
    draining: bool = False,
    jobs: tuple[str, ...] = (),
    region: str = "eu-central",
) -> PoolHeartbeat:
    return PoolHeartbeat(
        pool=pool,
        agent="ornina",
        region=region,
        agent_name=f"ornina.{pool}",
        worker=worker,
        capacity=capacity,
        active=active,
        load=min(1.0, active / capacity) if capacity else 0.0,
        draining=draining,
        version="1",
        at=AT,
        jobs=list(jobs),
    )


def registry() -> PoolRegistry:
    # Dead after 3 missed 1-second beats.
    return PoolRegistry(heartbeat_interval_s=1.0, dead_after_missed_beats=3)


def only(reg: PoolRegistry, now: float) -> PoolView:
    (view,) = reg.snapshot(now)
    return view


def test_aggregates_live_workers_of_a_pool() -> None:
    reg = registry()
    reg.observe(beat("w1", capacity=4, active=1, jobs=("AD_1",)), now=10.0)
    reg.observe(beat("w2", capacity=8, active=3, jobs=("AD_2", "AD_3")), now=10.5)
    v = only(reg, now=11.0)
    assert (v.pool, v.agent, v.region, v.agent_name) == ("eu-a", "ornina", "eu-central", "ornina.eu-a")
    assert (v.workers, v.capacity, v.active, v.open_slots) == (2, 12, 4, 8)
    assert v.load == pytest.approx(4 / 12)
    assert v.liveness == "alive" and not v.draining
    assert v.age_s == pytest.approx(0.5)
    assert v.jobs == frozenset({"AD_1", "AD_2", "AD_3"})


def test_latest_beat_of_a_worker_replaces_the_previous_one() -> None:
    reg = registry()
    reg.observe(beat("w1", active=1), now=0.0)
    reg.observe(beat("w1", active=3), now=1.0)
    assert only(reg, 1.0).active == 3


def hear(reg: PoolRegistry, until: float, since: float = 0.0, step: float = 0.5) -> None:
    """A witness worker in another pool beats every ``step`` seconds: the registry keeps hearing."""
    t = since
    while t <= until:
        reg.observe(beat("witness", pool="zz-witness"), now=t)
        t += step


def view(reg: PoolRegistry, now: float, pool: str = "eu-a") -> PoolView:
    got = reg.view(pool, now)
    assert got is not None
    return got


def test_worker_dies_after_missed_beats_and_pool_when_all_workers_are_dead() -> None:
    reg = registry()
    reg.observe(beat("w1", capacity=4, jobs=("AD_1",)), now=0.0)
    hear(reg, until=1.5)
    reg.observe(beat("w2", capacity=4), now=2.0)
    hear(reg, since=2.0, until=2.5)
    assert view(reg, 2.999).workers == 2
    hear(reg, since=3.0, until=3.0)
    # w1 silent for exactly 3 s: dead; its capacity and jobs no longer count.
    v = view(reg, 3.0)
    assert (v.workers, v.capacity, v.liveness, v.jobs) == (1, 4, "alive", frozenset())
    hear(reg, since=3.5, until=5.0)
    v = view(reg, 5.0)
    assert (v.workers, v.capacity, v.open_slots, v.liveness) == (0, 0, 0, "dead")
    assert v.age_s == pytest.approx(3.0)
    # A beat brings it back.
    reg.observe(beat("w1"), now=6.0)
    assert view(reg, 6.0).liveness == "alive"


def test_silence_of_everyone_kills_no_pool() -> None:
    # The observer heard nothing at all (its NATS link dropped, its loop starved, or every worker
    # lost NATS at once): that is not evidence against any one pool.
    reg = registry()
    reg.observe(beat("w1"), now=0.0)
    reg.observe(beat("w1", pool="eu-b"), now=0.5)
    assert view(reg, 60.0).liveness == "alive"
    assert view(reg, 60.0).age_s == pytest.approx(60.0)  # people still see the silence as it is
    assert reg.unheard_s(60.0) == pytest.approx(59.5)
    assert view(reg, 60.0, "eu-b").liveness == "alive"
    # Hearing again: only the pool that stays silent dies, one dead limit of hearing later.
    reg.observe(beat("w1"), now=61.0)
    assert view(reg, 62.0, "eu-b").liveness == "alive"
    reg.observe(beat("w1"), now=62.0)
    reg.observe(beat("w1"), now=63.0)
    assert view(reg, 63.0, "eu-b").liveness == "dead"
    assert view(reg, 63.0).liveness == "alive"


def test_a_starved_observer_catching_up_kills_no_pool() -> None:
    # Beats queued unread for 3 s behind a busy loop arrive in a clump: nobody died.
    reg = registry()
    hear(reg, until=10.0)
    reg.observe(beat("w1"), now=10.0)
    reg.observe(beat("w1", pool="eu-b"), now=10.0)
    # The sweep runs first, before the queued beats.
    assert view(reg, 13.5).liveness == view(reg, 13.5, "eu-b").liveness == "alive"
    reg.observe(beat("w1"), now=13.6)
    reg.observe(beat("w1", pool="eu-b"), now=13.6)
    assert view(reg, 13.6).liveness == view(reg, 13.6, "eu-b").liveness == "alive"


def test_pool_drains_when_every_live_worker_drains() -> None:
    reg = registry()
    reg.observe(beat("w1", active=1, draining=True), now=0.0)
    reg.observe(beat("w2", active=1), now=0.0)
    v = only(reg, 0.0)
    # The draining worker's spare slots are not offered; its running job still counts as active.
    assert (v.liveness, v.draining, v.capacity, v.active, v.open_slots) == ("alive", False, 8, 2, 3)
    reg.observe(beat("w2", active=1, draining=True), now=1.0)
    v = only(reg, 1.0)
    assert (v.liveness, v.draining, v.open_slots) == ("draining", True, 0)


def test_overloaded_worker_does_not_hide_free_slots_of_another() -> None:
    reg = registry()
    reg.observe(beat("w1", capacity=4, active=6), now=0.0)
    reg.observe(beat("w2", capacity=4, active=0), now=0.0)
    assert only(reg, 0.0).open_slots == 4


def test_operator_drain_takes_effect_at_once() -> None:
    reg = registry()
    reg.observe(beat("w1"), now=0.0)
    reg.mark_draining("eu-a")
    v = only(reg, 0.0)
    assert (v.liveness, v.draining, v.open_slots) == ("draining", True, 0)
    reg.observe(beat("w1"), now=1.0)  # whatever the workers say
    assert only(reg, 1.0).liveness == "draining"


def test_pinned_pool_is_dead_until_it_beats() -> None:
    pin = PinnedPool(id="us-a", agent="ornina", region="us-east")
    reg = PoolRegistry(1.0, 3, pinned=[pin])
    v = only(reg, 100.0)
    assert (v.pool, v.agent, v.region, v.agent_name) == ("us-a", "ornina", "us-east", "ornina.us-a")
    assert (v.liveness, v.workers, v.age_s) == ("dead", 0, None)
    reg.observe(beat("w1", pool="us-a", region="us-east"), now=101.0)
    assert only(reg, 101.0).liveness == "alive"


def test_forgetting_the_last_worker_removes_the_pool_and_its_operator_drain() -> None:
    reg = registry()
    reg.observe(beat("w1"), now=0.0)
    reg.mark_draining("eu-a")
    assert reg.forget_worker("eu-a", "w1") is True
    assert reg.forget_worker("eu-a", "w1") is False
    assert reg.snapshot(0.0) == [] and reg.view("eu-a", 0.0) is None
    # A pool that comes back under that id is a new deployment: this replica schedules onto it,
    # as one started after the drain would.
    reg.observe(beat("w2"), now=1.0)
    assert view(reg, 1.0).liveness == "alive"


def test_forgetting_a_pinned_pool_keeps_it_known_and_dead() -> None:
    pin = PinnedPool(id="eu-a", agent="ornina", region="eu-central")
    reg = PoolRegistry(1.0, 3, pinned=[pin])
    reg.observe(beat("w1"), now=0.0)
    assert reg.forget_worker("eu-a", "w1") is True
    assert (view(reg, 0.0).liveness, view(reg, 0.0).workers) == ("dead", 0)


def test_prune_forgets_long_silent_workers() -> None:
    reg = registry()
    reg.observe(beat("old"), now=0.0)
    hear(reg, until=50.0)
    reg.observe(beat("new"), now=50.0)
    hear(reg, since=50.5, until=60.0)
    assert reg.prune(now=60.0, forget_after_s=30.0) == ["eu-a/old"]
    assert view(reg, 60.0).workers == 0  # "new" is dead too, but not yet forgotten
    # forget_after_s below the dead limit is raised to it: a live worker is never pruned.
    reg.observe(beat("new"), now=61.0)
    assert reg.prune(now=62.0, forget_after_s=0.0) == []


def test_snapshot_sorted_by_pool_id() -> None:
    reg = registry()
    for pool in ("c", "a", "b"):
        reg.observe(beat("w", pool=pool), now=0.0)
    assert [v.pool for v in reg.snapshot(0.0)] == ["a", "b", "c"]


def test_invalid_timings_are_refused() -> None:
    with pytest.raises(ValueError):
        PoolRegistry(0.0, 3)
    with pytest.raises(ValueError):
        PoolRegistry(1.0, 0)


def test_prune_forgets_nobody_while_nothing_is_heard() -> None:
    reg = registry()
    reg.observe(beat("w1"), now=0.0)
    assert reg.prune(now=10_000.0, forget_after_s=30.0) == []
    assert view(reg, 10_000.0).liveness == "alive"


def test_a_long_running_census_forgets_silent_workers_too() -> None:
    census = PoolCensus(SwitchboardConfig())  # `status --watch` and `dev` keep one for hours
    census.observe(beat("old"), now=0.0)
    hear(census.registry, since=1.0, until=FORGET_AFTER_S - 1.0, step=1.0)
    assert [v.pool for v in census.views(FORGET_AFTER_S - 1.0)] == ["eu-a", "zz-witness"]
    hear(census.registry, since=FORGET_AFTER_S, until=FORGET_AFTER_S, step=1.0)
    assert [v.pool for v in census.views(FORGET_AFTER_S)] == ["zz-witness"]
    census.observe(beat("new"), now=FORGET_AFTER_S + 1.0)
    assert [hb.worker for hb in census.workers_of("eu-a", FORGET_AFTER_S + 1.0)] == ["new"]


def test_a_pool_census_carries_every_view_field_but_the_job_ids() -> None:
    from orchestrator.pools import summary, view_of
    from shared.codec import decode, encode
    from shared.messages import PoolCensusReply

    view = PoolView(
        "eu-central-a", "agent", "eu-central", "agent.eu-central-a", 2, 8, 3, 0.375, False, "alive", 0.4
    )
    view = dataclasses.replace(view, jobs=frozenset({"AD_1"}), open_slots=5)
    answer = decode(PoolCensusReply, encode(PoolCensusReply(replica="r1", pools=[summary(view)])))
    assert view_of(answer.pools[0]) == dataclasses.replace(view, jobs=frozenset())


def test_a_pools_jobs_are_those_its_live_workers_last_listed() -> None:
    """Membership is one lookup in the registry's job map, kept by each beat's difference."""
    reg = registry()
    reg.observe(beat("w1", jobs=("AD_1", "AD_2")), now=0.0)
    reg.observe(beat("w2", jobs=("AD_3",)), now=0.0)
    reg.observe(beat("w9", pool="other", jobs=("AD_9",)), now=0.0)
    jobs = view(reg, 0.5).jobs
    assert "AD_1" in jobs and "AD_3" in jobs and "AD_9" not in jobs and "AD_x" not in jobs
    assert set(jobs) == {"AD_1", "AD_2", "AD_3"} and len(jobs) == 3
    reg.observe(beat("w1", jobs=("AD_2", "AD_4")), now=1.0)  # AD_1 ended, AD_4 started
    jobs = view(reg, 1.0).jobs
    assert "AD_1" not in jobs and "AD_4" in jobs
    reg.observe(beat("w1", jobs=("AD_2", "AD_4")), now=2.0)
    reg.observe(beat("w1", jobs=("AD_2", "AD_4")), now=3.0)
    # w2 silent for 3 s: dead, its job no longer listed; forgotten, nothing of it is left.
    assert "AD_3" not in view(reg, 3.0).jobs and "AD_2" in view(reg, 3.0).jobs
    assert reg.forget_worker("eu-a", "w2")
    assert "AD_3" not in view(reg, 3.0).jobs and "AD_3" not in reg._job_owner


def test_pool_dead_and_region_say_what_the_view_says_without_building_it() -> None:
    rng = random.Random(15)
    pinned = [PinnedPool(id="pinned", agent="ornina", region="us-east")]
    reg = PoolRegistry(heartbeat_interval_s=1.0, dead_after_missed_beats=3, pinned=pinned)
    pools = ["eu-a", "eu-b", "pinned", "never"]
    now = 0.0
    for _ in range(400):
        now += rng.choice((0.1, 0.5, 1.5, 4.0))
        action = rng.random()
        pool = rng.choice(pools[:3])
        worker = f"w{rng.randrange(3)}"
        if action < 0.6:
            reg.observe(beat(worker, pool=pool, draining=rng.random() < 0.2, region="eu-central"), now)
        elif action < 0.7:
            reg.forget_worker(pool, worker)
        elif action < 0.75:
            reg.mark_draining(pool)
        probe = now + rng.choice((0.0, 1.0, 2.9, 3.1, 10.0))
        for p in pools:
            view = reg.view(p, probe)
            assert reg.pool_dead(p, probe) == (view is None or view.liveness == "dead"), (p, probe)
            assert reg.region(p) == (view.region if view is not None else None)


@pytest.mark.parametrize("seed", range(6))
def test_listed_jobs_say_what_the_views_jobs_say_without_building_them(seed: int) -> None:
    rng = random.Random(seed)
    reg = PoolRegistry(heartbeat_interval_s=1.0, dead_after_missed_beats=3)
    pools, jobs = ["eu-a", "eu-b"], [f"AD_{i}" for i in range(12)]
    now = 0.0
    for _ in range(300):
        now += rng.choice((0.1, 0.5, 1.5, 4.0))
        pool, worker = rng.choice(pools), f"w{rng.randrange(3)}"
        reg.observe(beat(worker, pool=pool, jobs=tuple(rng.sample(jobs, rng.randrange(5)))), now)
        probe = now + rng.choice((0.0, 2.9, 3.1, 10.0))
        listed = reg.listed_jobs(probe)
        assert sorted(listed) == sorted(p for p in pools if reg.view(p, probe) is not None)
        for view in reg.snapshot(probe):
            assert all((job in listed[view.pool]) == (job in view.jobs) for job in jobs), (view.pool, probe)
        assert listed.get("never", ()) == ()


def _orphaned_by_walk(reg: PoolRegistry, now: float) -> frozenset[str]:
    """The rule, walked: jobs a dead worker listed that no live worker lists."""
    workers = [w for ws in reg._workers.values() for w in ws.values()]
    live = [w.jobs for w in workers if reg._alive(w, now)]
    dead = [w for w in workers if not reg._alive(w, now)]
    return frozenset(j for w in dead for j in w.jobs if not any(j in jobs for jobs in live))


@pytest.mark.parametrize("seed", range(8))
def test_orphaned_jobs_from_the_job_counts_are_those_of_the_walk(seed: int) -> None:
    rng = random.Random(seed)
    reg = registry()
    lists: dict[tuple[str, str], list[str]] = {}
    now = 0.0
    for _ in range(300):
        now += rng.choice((0.2, 0.5, 1.0, 2.5))
        pool, worker = rng.choice(("eu-a", "eu-b")), f"w{rng.randrange(4)}"
        key = (pool, worker)
        if rng.random() < 0.08:
            reg.forget_worker(pool, worker)
            lists.pop(key, None)
        elif rng.random() < 0.7:
            jobs = [j for j in lists.get(key, []) if rng.random() > 0.2]
            jobs += [f"AD_{rng.randrange(40)}" for _ in range(rng.randint(0, 4))]  # some shared
            lists[key] = sorted(set(jobs))
            reg.observe(beat(worker, pool=pool, jobs=tuple(lists[key])), now)
        held = [w.jobs for ws in reg._workers.values() for w in ws.values()]
        counts = {j: sum(j in jobs for jobs in held) for jobs in held for j in jobs}
        assert {j: e[2] for j, e in reg._job_owner.items()} == counts
        for probe in (now, now + 2.0, now + 4.0):
            assert reg.orphaned_jobs(probe) == _orphaned_by_walk(reg, probe)


def _view_by_walks(reg: PoolRegistry, pool: str, now: float) -> tuple[object, ...] | None:
    """The view's numbers as separate walks over the workers (the rule, spelled out)."""
    if pool not in reg._identity:
        return None
    workers = reg._workers.get(pool, {})
    live = [w.beat for w in workers.values() if reg._alive(w, now)]
    capacity = sum(b.capacity for b in live)
    active = sum(b.active for b in live)
    drained = bool(live) and (pool in reg._operator_drained or all(b.draining for b in live))
    liveness = "dead" if not live else ("draining" if drained else "alive")
    opened = sum(max(0, b.capacity - b.active) for b in live if not b.draining)
    ages = [now - w.seen_at for w in workers.values()]
    return (
        len(live),
        capacity,
        active,
        drained,
        liveness,
        max(0.0, min(ages)) if ages else None,
        opened if liveness == "alive" else 0,
        sorted(b.worker for b in live),
    )


@pytest.mark.parametrize("seed", range(8))
def test_a_view_in_one_pass_says_what_the_walks_say(seed: int) -> None:
    rng = random.Random(seed)
    pinned = [PinnedPool(id="pinned", agent="ornina", region="us-east")]
    reg = PoolRegistry(heartbeat_interval_s=1.0, dead_after_missed_beats=3, pinned=pinned)
    now = 0.0
    for _ in range(300):
        now += rng.choice((0.1, 0.5, 1.5, 4.0))
        pool, worker = rng.choice(("eu-a", "eu-b", "pinned")), f"w{rng.randrange(4)}"
        if rng.random() < 0.1:
            reg.forget_worker(pool, worker)
        elif rng.random() < 0.05:
            reg.mark_draining(pool)
        else:
            capacity = rng.randint(0, 6)
            active, draining = rng.randint(0, capacity), rng.random() < 0.2
            reg.observe(beat(worker, pool=pool, capacity=capacity, active=active, draining=draining), now)
        for probe in (now, now + 1.0, now + 3.5):
            for p in ("eu-a", "eu-b", "pinned", "never"):
                v = reg.view(p, probe)
                got = None
                if v is not None:
                    live = sorted(v.jobs._alive)  # type: ignore[attr-defined]
                    got = (
                        v.workers,
                        v.capacity,
                        v.active,
                        v.draining,
                        v.liveness,
                        v.age_s,
                        v.open_slots,
                        live,
                    )
                assert got == _view_by_walks(reg, p, probe), (p, probe)


def test_a_worker_is_draining_by_its_own_beat_or_an_operator_drain() -> None:
    reg = registry()
    reg.observe(beat("w1"), now=1.0)
    reg.observe(beat("w2", draining=True), now=1.0)
    assert (reg.worker_draining("eu-a", "w1"), reg.worker_draining("eu-a", "w2")) == (False, True)
    assert not reg.worker_draining("eu-a", "unknown")
    reg.mark_draining("eu-a")
    assert reg.worker_draining("eu-a", "w1")
