"""Pool liveness across regions: a region silent as a whole is cut off, not dead, until it is lost."""

from __future__ import annotations

from orchestrator.pools import FORGET_AFTER_S, PoolRegistry
from tests.unit.test_pools import beat


def eu_replica(region_lost_after_s: float = 30.0) -> PoolRegistry:
    # Dead after 3 missed 1-second beats; this replica's NATS cluster is eu-central's.
    return PoolRegistry(1.0, 3, home_region="eu-central", region_lost_after_s=region_lost_after_s)


def beats(reg: PoolRegistry, start: float, end: float, *who: tuple[str, str, str]) -> None:
    """Every second from ``start`` to ``end``: a beat from each ``(worker, pool, region)``."""
    t = start
    while t <= end:
        for worker, pool, region in who:
            reg.observe(beat(worker, pool=pool, region=region), now=t)
        t += 1.0


EU = ("we", "eu-a", "eu-central")
US = ("wu", "us-a", "us-east")
US_B = ("wu2", "us-b", "us-east")


def test_a_cut_gateway_kills_no_pool_of_the_region_behind_it() -> None:
    reg = eu_replica()
    beats(reg, 0.0, 10.0, EU, US)
    beats(reg, 11.0, 25.0, EU)  # 15 s of us-east silence while eu-central is heard
    assert not reg.pool_dead("us-a", 25.5)
    assert reg.view("us-a", 25.5).liveness == "alive"  # type: ignore[union-attr]
    assert not reg.region_lost("us-east", 25.5)
    beats(reg, 26.0, 26.0, EU, US)  # the gateway is back: nothing happened
    assert not reg.pool_dead("us-a", 26.5)


def test_a_region_silent_for_region_lost_after_s_is_lost_and_its_pools_dead() -> None:
    reg = eu_replica(region_lost_after_s=30.0)
    beats(reg, 0.0, 10.0, EU, US)
    beats(reg, 11.0, 39.0, EU)
    assert not reg.region_lost("us-east", 39.5)
    beats(reg, 40.0, 41.0, EU)
    assert reg.region_lost("us-east", 41.0)
    assert reg.pool_dead("us-a", 41.0)
    assert reg.view("us-a", 41.0).liveness == "dead"  # type: ignore[union-attr]
    assert not reg.pool_dead("eu-a", 41.0)
    beats(reg, 42.0, 42.0, US)  # it returns: alive at its first beat
    assert not reg.region_lost("us-east", 42.0) and not reg.pool_dead("us-a", 42.0)


def test_one_pool_dying_among_the_live_pools_of_a_foreign_region_dies_as_fast_as_a_local_one() -> None:
    reg = eu_replica()
    beats(reg, 0.0, 10.0, EU, US, US_B)
    beats(reg, 11.0, 14.0, EU, US_B)
    assert reg.pool_dead("us-a", 14.0)
    assert not reg.pool_dead("us-b", 14.0)


def test_a_replica_that_hears_nothing_loses_no_region() -> None:
    reg = eu_replica()
    beats(reg, 0.0, 10.0, EU, US)
    assert not reg.region_lost("us-east", 200.0)
    assert not reg.pool_dead("us-a", 200.0) and not reg.pool_dead("eu-a", 200.0)


def test_without_a_home_region_every_pool_is_judged_as_local() -> None:
    reg = PoolRegistry(1.0, 3)  # one NATS cluster for all: a silent pool is dead after 3 s
    beats(reg, 0.0, 10.0, EU, US)
    beats(reg, 11.0, 14.0, EU)
    assert reg.pool_dead("us-a", 14.0)
    assert not reg.region_lost("us-east", 14.0)


def test_no_responders_from_behind_a_silent_gateway_marks_nobody_gone() -> None:
    reg = eu_replica()
    beats(reg, 0.0, 10.0, EU, US, US_B)
    beats(reg, 11.0, 13.0, EU)  # all of us-east silent
    assert not reg.mark_gone("us-a", "wu", 10.0, 13.0)
    assert not reg.pool_dead("us-a", 13.0)
    # With its region heard (us-b beats), "no responders" is believed as for a local worker.
    beats(reg, 14.0, 14.0, EU, US_B)
    assert reg.mark_gone("us-a", "wu", 10.0, 14.2)
    assert reg.pool_dead("us-a", 14.2)
    # A local worker's "no responders" is believed at once, whatever the other regions do.
    reg.observe(beat("we2", pool="eu-b", region="eu-central"), now=14.5)
    assert reg.mark_gone("eu-b", "we2", 14.5, 15.0)


def test_a_lost_regions_workers_are_forgotten_in_time() -> None:
    reg = eu_replica()
    beats(reg, 0.0, 1.0, EU, US)
    beats(reg, 2.0, FORGET_AFTER_S + 3.0, EU)
    assert reg.prune(FORGET_AFTER_S + 3.0, FORGET_AFTER_S) == ["us-a/wu"]
    assert reg.view("us-a", FORGET_AFTER_S + 3.0) is None


def test_a_region_is_never_lost_sooner_than_its_pools_would_die() -> None:
    # dead_after_missed_beats: 120 (as the e2e kill test runs) with the 30 s default.
    reg = PoolRegistry(1.0, 120, home_region="eu-central", region_lost_after_s=30.0)
    assert reg.region_lost_after_s == 120.0
    beats(reg, 0.0, 1.0, EU, US)
    beats(reg, 2.0, 60.0, EU)
    assert not reg.region_lost("us-east", 60.0) and not reg.pool_dead("us-a", 60.0)


def test_a_pool_that_stays_silent_when_its_lost_region_returns_stays_dead() -> None:
    reg = eu_replica(region_lost_after_s=30.0)
    beats(reg, 0.0, 10.0, EU, US, US_B)
    beats(reg, 11.0, 45.0, EU)  # us-east lost
    assert reg.pool_dead("us-a", 45.0) and reg.pool_dead("us-b", 45.0)
    beats(reg, 46.0, 47.0, EU, US_B)  # only us-b comes back
    assert not reg.pool_dead("us-b", 47.0)
    assert reg.pool_dead("us-a", 46.0) and reg.pool_dead("us-a", 47.0)
    assert reg.view("us-a", 47.0).liveness == "dead"  # type: ignore[union-attr]


def test_a_silent_regions_pools_keep_their_rooms_but_are_offered_no_new_ones() -> None:
    from orchestrator.scheduler.feasibility import static_rejection

    reg = eu_replica()
    beats(reg, 0.0, 10.0, EU, US)
    assert not reg.view("us-a", 10.5).silent  # type: ignore[union-attr]
    beats(reg, 11.0, 12.0, EU)  # two beats missed: within the death limit, nothing changes yet
    assert not reg.view("us-a", 12.5).silent  # type: ignore[union-attr]
    beats(reg, 13.0, 20.0, EU)
    view = reg.view("us-a", 20.5)
    assert view is not None and view.silent and view.liveness == "alive" and not reg.pool_dead("us-a", 20.5)
    why = static_rejection(view, view.agent, "us-east", tier=0)
    assert why is not None and "silent" in why
    assert not reg.view("eu-a", 20.5).silent  # type: ignore[union-attr]  # the home region never is
    beats(reg, 21.0, 21.0, EU, US)  # heard again: offered again
    assert not reg.view("us-a", 21.5).silent  # type: ignore[union-attr]
