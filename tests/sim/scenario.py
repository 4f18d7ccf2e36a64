"""One run's world, before it runs: replicas, pools, the rooms' script, the fault timeline and mix.

:meth:`Scenario.draw` makes one from a seed (the random campaign); the regression tests write
theirs by hand (fixed faults at fixed times).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tests.sim.config import LOBBY_PREFIX, POOLS, ROOM_PREFIX
from tests.sim.delivery import Router
from tests.sim.faults import FaultMix, Rule


@dataclass(slots=True)
class RoomScript:
    """A user opens ``name`` at ``at`` (RoomCreated follows); it ends at ``end_at`` (RoomEnded)."""

    name: str
    at: float
    end_at: float | None = None
    region: str | None = None
    duplicate: bool = False  # RoomCreated published twice (a retried webhook)
    sid: str = ""

    def __post_init__(self) -> None:
        self.sid = self.sid or f"RM_{self.name}"


@dataclass(slots=True)
class Event:
    """A timeline fault: ``what`` happens to ``target`` at ``at`` and lasts ``duration`` seconds.
    what: crash_replica (target: slot) | crash_pool | partition_pool (target: pool id) |
    kv_outage | lk_outage."""

    at: float
    what: str
    target: str = ""
    duration: float = 0.0


@dataclass(slots=True)
class Scenario:
    replicas: int
    pools: list[tuple[str, str, int]]  # (pool id, region, capacity)
    rooms: list[RoomScript]
    heal_at: float
    mix: FaultMix = field(default_factory=FaultMix)
    timeline: list[Event] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    router: Router | None = None
    phases: list[float] | None = None  # per replica: extra start delay (sets its sweep's phase)
    name: str = ""

    @classmethod
    def draw(cls, rng: random.Random, calm: bool = False) -> Scenario:
        """A random world; ``calm``: the same shapes, no faults at all."""
        mix = FaultMix.draw(rng)
        if calm:
            mix = FaultMix()
        replicas = rng.choices((1, 2, 3), weights=(3, 5, 2))[0]
        pools = [(pid, region, rng.randint(1, 4)) for pid, region in POOLS[: rng.randint(2, 3)]]
        heal_at = round(rng.uniform(15.0, 40.0), 3)
        rooms: list[RoomScript] = []
        for i in range(1, rng.randint(1, 5) + 1):
            at = round(rng.uniform(0.5, heal_at * 0.8), 3)
            rooms.append(
                RoomScript(
                    name=f"{LOBBY_PREFIX if rng.random() < 0.12 else ROOM_PREFIX}{i}",
                    at=at,
                    end_at=round(at + rng.uniform(0.5, 40.0), 3) if rng.random() < 0.35 else None,
                    region=rng.choices((None, "eu-west", "mars-9"), weights=(7, 2, 1))[0],
                    duplicate=rng.random() < mix.event_dup,
                )
            )
        timeline: list[Event] = []

        def times(n: int, what: str, targets: list[str], lo: float, hi: float) -> None:
            for _ in range(n):
                at = round(rng.uniform(1.0, heal_at), 3)
                timeline.append(Event(at, what, rng.choice(targets), round(rng.uniform(lo, hi), 3)))

        times(mix.replica_crashes, "crash_replica", [str(s) for s in range(replicas)], 1.0, 20.0)
        times(mix.pool_crashes, "crash_pool", [p[0] for p in pools], 2.0, 30.0)
        times(mix.pool_partitions, "partition_pool", [p[0] for p in pools], 2.0, 15.0)
        times(mix.kv_outages, "kv_outage", [""], 1.0, 8.0)
        times(mix.lk_outages, "lk_outage", [""], 1.0, 10.0)
        timeline.sort(key=lambda e: e.at)
        phases = [round(rng.uniform(0.0, 0.5), 3) for _ in range(replicas)]
        return cls(replicas, pools, rooms, heal_at, mix, timeline, phases=phases)

    def describe(self) -> str:
        rooms = ", ".join(
            f"{r.name}@{r.at:g}"
            + (f"-{r.end_at:g}" if r.end_at is not None else "")
            + ("x2" if r.duplicate else "")
            for r in self.rooms
        )
        pools = ", ".join(f"{p}({region},cap {cap})" for p, region, cap in self.pools)
        events = ", ".join(
            f"{e.what}{' ' + e.target if e.target else ''}@{e.at:g}+{e.duration:g}" for e in self.timeline
        )
        lines = [
            f"replicas {self.replicas}; pools {pools}; heal at {self.heal_at:g}s",
            f"rooms: {rooms}",
            f"faults: {self.mix.describe()}",
        ]
        if events:
            lines.append(f"timeline: {events}")
        if self.rules:
            lines.append("rules: " + "; ".join(_rule(r) for r in self.rules))
        return "\n".join(lines)


def _rule(rule: Rule) -> str:
    parts = [f"{rule.kind}.{rule.op}"]
    for name in ("room", "state", "activity", "actor", "attempt", "nth"):
        value = getattr(rule, name)
        if value is not None:
            parts.append(f"{name}={value}")
    parts.append(f"-> {rule.outcome}")
    if rule.delay is not None:
        parts.append(f"delay={rule.delay:g}")
    if rule.answer is not None:
        parts.append(f"answer={rule.answer:g}")
    return " ".join(parts)
