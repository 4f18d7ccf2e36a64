"""Reservations: slots held between a decision and the heartbeat that shows the job."""

from __future__ import annotations

from bench.reservations import Reservations


def test_reserve_counts_per_pool_and_is_idempotent() -> None:
    r = Reservations()
    r.reserve("p1", "room-a/1", now=0.0)
    r.reserve("p1", "room-a/1", now=1.0)  # retried decision: still one slot
    r.reserve("p1", "room-b/1", now=0.0)
    r.reserve("p2", "room-c/1", now=0.0)
    assert r.count("p1") == 2 and r.count("p2") == 1 and r.count("p3") == 0
    assert r.counts() == {"p1": 2, "p2": 1}
    assert len(r) == 3


def test_reserving_the_same_key_on_another_pool_moves_the_hold() -> None:
    r = Reservations()
    r.reserve("p1", "room-a/1", now=0.0)
    r.reserve("p2", "room-a/1", now=0.0)
    assert r.counts() == {"p2": 1}
    assert r.pool_of("room-a/1") == "p2"


def test_counts_is_a_copy() -> None:
    r = Reservations()
    r.reserve("p1", "k", now=0.0)
    counts = r.counts()
    r.release("k")
    assert counts == {"p1": 1} and r.counts() == {}


def test_release_frees_the_slot_once() -> None:
    r = Reservations()
    r.reserve("p1", "k", now=0.0)
    assert r.release("k") is True
    assert r.release("k") is False
    assert r.count("p1") == 0 and r.counts() == {}


def test_reconcile_releases_only_bound_dispatches_seen_on_that_pool() -> None:
    r = Reservations()
    r.reserve("p1", "a/1", now=0.0)
    r.reserve("p1", "b/1", now=0.0)
    r.reserve("p1", "c/1", now=0.0)  # never bound: CreateDispatch has not answered yet
    r.reserve("p2", "d/1", now=0.0)
    assert r.bind("a/1", "AD_a") and r.bind("b/1", "AD_b") and r.bind("d/1", "AD_d")
    assert not r.bind("unknown", "AD_x")
    # p1 reports AD_a and (wrongly) AD_d: only AD_a is a p1 reservation.
    assert r.reconcile("p1", frozenset({"AD_a", "AD_d", "AD_c"}), now=1.0) == ["a/1"]
    assert r.counts() == {"p1": 2, "p2": 1}
    assert r.reconcile("p2", frozenset({"AD_d"}), now=1.0) == ["d/1"]
    assert r.counts() == {"p1": 2}


def test_expire_releases_holds_at_or_past_ttl() -> None:
    r = Reservations()
    r.reserve("p1", "old", now=0.0)
    r.reserve("p1", "new", now=5.0)
    assert r.expire(now=9.9, ttl=10.0) == []
    assert r.expire(now=10.0, ttl=10.0) == ["old"]
    assert r.counts() == {"p1": 1}
    assert r.expire(now=100.0, ttl=10.0) == ["new"]
    assert len(r) == 0
