"""Presence probes: a late worker whose connection is gone dies at once; nothing else does.

NATS is a stand-in here (a request answers, times out or says "no responders" as the test sets);
tests/integration/test_worker_presence.py runs the real server and processes.
"""

from __future__ import annotations

from typing import Any

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from orchestrator.pools import PoolRegistry
from orchestrator.worker_presence import LATE_AFTER_BEATS, STRIKES, WorkerPresence
from tests.unit.test_pools import beat

POOL, WORKER = "eu-a", "host-1-ab12"
SUBJECT = f"switchboard.pools.{POOL}.presence.{WORKER}"


class FakeNats:
    """Answers per subject: "yes", "gone" (no responders) or "frozen" (a timeout)."""

    def __init__(self) -> None:
        self.state = "yes"
        self.asked: list[str] = []

    async def request(self, subject: str, payload: bytes, timeout: float) -> Any:  # noqa: ASYNC109 (nats-py's signature)
        self.asked.append(subject)
        if self.state == "gone":
            raise NoRespondersError
        if self.state == "frozen":
            raise NatsTimeoutError
        return object()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def world() -> tuple[PoolRegistry, FakeNats, Clock, WorkerPresence]:
    reg = PoolRegistry(heartbeat_interval_s=1.0, dead_after_missed_beats=3)
    nc, clock = FakeNats(), Clock()
    presence = WorkerPresence(nc, reg, 1.0, clock=clock)  # type: ignore[arg-type]
    clock.now += 0.5  # connected a moment before the first beat
    return reg, nc, clock, presence


def hear(reg: PoolRegistry, presence: WorkerPresence, clock: Clock) -> None:
    reg.observe(beat(WORKER, pool=POOL), clock.now)
    presence.heard(POOL, WORKER)


async def rounds(presence: WorkerPresence, clock: Clock, n: int, step: float = 0.1) -> None:
    """``n`` probe rounds; a worker of another pool beats every second meanwhile (the registry
    judges silence only while it hears someone: one pool dying among live ones)."""
    reg = presence._registry
    for _ in range(n):
        clock.now += step
        if round(clock.now * 10) % 10 == 0:
            reg.observe(beat("bystander", pool="us-a", region="us-east"), clock.now)
        await presence.round()


async def test_a_killed_worker_is_dead_a_beat_and_a_half_after_its_last_beat() -> None:
    reg, nc, clock, presence = world()
    clock.now += 1.0
    for _ in range(3):  # beating; asked once whether it answers at all
        hear(reg, presence, clock)
        await rounds(presence, clock, 10)
    assert nc.asked == [SUBJECT]
    hear(reg, presence, clock)
    last_beat = clock.now
    nc.state = "gone"  # SIGKILL: its connection closes
    while not reg.pool_dead(POOL, clock.now):
        await rounds(presence, clock, 1)
        assert clock.now - last_beat < 3.0, "should not need the missed beats"
    assert LATE_AFTER_BEATS <= clock.now - last_beat <= LATE_AFTER_BEATS + STRIKES * 0.1 + 0.11
    hear(reg, presence, clock)  # a beat after all: it is back
    assert not reg.pool_dead(POOL, clock.now)


async def test_a_frozen_worker_keeps_its_rooms_until_its_beats_are_missed() -> None:
    reg, nc, clock, presence = world()
    hear(reg, presence, clock)
    await rounds(presence, clock, 15)
    nc.state = "frozen"  # SIGSTOP, a GC pause: the subscription is held, nobody answers
    for _ in range(14):  # to 2.9 s after its beat
        await rounds(presence, clock, 1)
        assert not reg.pool_dead(POOL, clock.now)
    await rounds(presence, clock, 2)
    assert reg.pool_dead(POOL, clock.now)  # the beats' own limit (3 s) still holds


async def test_a_worker_that_never_answered_is_judged_by_its_beats() -> None:
    reg, nc, clock, presence = world()
    nc.state = "gone"  # an older build, or a NATS user without the permission
    hear(reg, presence, clock)
    await rounds(presence, clock, 25)
    assert not reg.pool_dead(POOL, clock.now)
    await rounds(presence, clock, 6)
    assert reg.pool_dead(POOL, clock.now)


async def test_after_this_replicas_reconnect_only_a_beat_heard_since_counts() -> None:
    reg, nc, clock, presence = world()
    hear(reg, presence, clock)
    await rounds(presence, clock, 15)
    hear(reg, presence, clock)
    # NATS restarted: this replica is back, the worker not yet (no subscription: "no responders").
    await rounds(presence, clock, 5)
    presence.reconnected()
    nc.state = "gone"
    for _ in range(20):
        await rounds(presence, clock, 1)
        assert not reg.pool_dead(POOL, clock.now)
    nc.state = "yes"
    hear(reg, presence, clock)  # the worker reconnected and beats; then it is killed
    nc.state = "gone"
    await rounds(presence, clock, 18)
    assert reg.pool_dead(POOL, clock.now)


async def test_one_no_responders_alone_is_not_a_death() -> None:
    reg, nc, clock, presence = world()
    hear(reg, presence, clock)
    await rounds(presence, clock, 15)  # late from 1.1 s after its beat
    nc.state = "gone"
    await rounds(presence, clock, 1)  # one strike: reconnecting to another server, say
    nc.state = "yes"
    await rounds(presence, clock, 1)
    nc.state = "gone"
    await rounds(presence, clock, 1)
    assert not reg.pool_dead(POOL, clock.now)
    await rounds(presence, clock, 1)
    assert reg.pool_dead(POOL, clock.now)


async def test_a_worker_that_never_answers_clearly_is_asked_less_and_less_often() -> None:
    """No answer at all (a NATS user without the permission, a worker frozen from its start):
    asked again after 1, 2, 4 ... seconds, never every round."""
    reg, nc, clock, presence = world()
    nc.state = "frozen"
    for _ in range(20):  # beats for 20 s
        hear(reg, presence, clock)
        await rounds(presence, clock, 10)
    asked = [s for s in nc.asked if s == SUBJECT]
    assert 4 <= len(asked) <= 6, len(asked)  # at 1, 2, 4, 8, 16 s from the first ask
