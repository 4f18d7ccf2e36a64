"""One run's world, before it runs: replicas, pools, the rooms' script, the fault timeline and mix.

:meth:`Scenario.draw` makes one from a seed (the random campaign); the regression tests write
theirs by hand (fixed faults at fixed times).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields

from tests.sim.config import LOBBY_PREFIX, LONG_OUTAGE_S, POOLS, ROOM_PREFIX
from tests.sim.delivery import Router
from tests.sim.faults import FaultMix, Rule


@dataclass(slots=True)
class RoomScript:
    """A user opens ``name`` at ``at`` (RoomCreated follows); it ends at ``end_at`` (RoomEnded).

    One incarnation of a room name: the same name opened again after it closed is another
    RoomScript with its own sid (``RM_<name>``, then ``RM_<name>.2``, ``.3``). The lifecycle
    edges of issue 14, each off by default:
    """

    name: str
    at: float
    end_at: float | None = None
    region: str | None = None
    duplicate: bool = False  # RoomCreated published twice (a retried webhook)
    sid: str = ""
    sidless: bool = False  # its events carry no sid (RoomCreated has created_at)
    lost_created: bool = False  # its RoomCreated is never published (a lost webhook)
    lost_ended: bool = False  # its RoomEnded is never published
    ended_first: bool = False  # RoomEnded is published before RoomCreated (which follows it)
    # Deleted while its dispatch is in flight: ``after_check`` — right after the dispatch's
    # existence check answered; ``on_wire`` — just before CreateDispatch reaches LiveKit.
    doomed: str | None = None
    joined_ghost: bool = False  # (set by the run) the user joined the name's ghost room: its sid

    def __post_init__(self) -> None:
        self.sid = self.sid or f"RM_{self.name}"

    def flags(self) -> str:
        marks = [
            ("x2", self.duplicate),
            (" no-sid", self.sidless),
            (" lost-created", self.lost_created),
            (" lost-ended", self.lost_ended),
            (" ended-first", self.ended_first),
            (f" doomed-{self.doomed}", self.doomed is not None),
            (" joined-its-ghost", self.joined_ghost),
        ]
        return "".join(mark for mark, on in marks if on)


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """Per-seed knobs for room lifecycle edges (issue 14), drawn like the fault mix: each kind on
    in about one seed in four, at a rate of its own (per room incarnation)."""

    lost_created: float = 0.0  # its RoomCreated webhook is lost (the resync must find the room)
    lost_ended: float = 0.0  # its RoomEnded is lost (the resync must end the record)
    ended_first: float = 0.0  # RoomEnded reaches NATS before RoomCreated
    reuse: float = 0.0  # the name is opened again (a new sid) after it closes, up to 3 times
    sidless: float = 0.0  # (per name) events without a sid
    dispatch_race: float = 0.0  # deleted while its dispatch is in flight (a ghost room follows)
    long_outage: bool = False  # LiveKit's API down for LONG_OUTAGE_S while rooms arrive

    @classmethod
    def draw(cls, rng: random.Random) -> Lifecycle:
        values: dict[str, float | bool] = {}
        for f in fields(cls):
            if f.name == "long_outage":
                values[f.name] = rng.random() < 0.08
            else:
                on = rng.random() < 0.25
                values[f.name] = round(rng.uniform(0.2, 0.6), 3) if on else 0.0
        return cls(**values)  # type: ignore[arg-type]

    def faultless(self) -> Lifecycle:
        """The same shapes (reused names, no sids, ends before starts), nothing lost or raced."""
        return Lifecycle(ended_first=self.ended_first, reuse=self.reuse, sidless=self.sidless)

    def describe(self) -> str:
        on = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name)]
        return " ".join(on) or "none"


@dataclass(slots=True)
class Event:
    """A timeline fault: ``what`` happens to ``target`` at ``at`` and lasts ``duration`` seconds.
    what: crash_replica | stop_replica (a clean stop: its membership key deleted) (target: slot) |
    crash_pool | partition_pool (target: pool id) | kv_outage | lk_outage | lk_outage_long (refused
    for its first half, unanswered after)."""

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
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    # A named scenario's expected end, per room: "<state>/<reason>" of its record (checked with
    # invariant 2; kind ``unexpected_outcome``). Random seeds expect nothing beyond the invariants.
    expect: dict[str, str] = field(default_factory=dict)

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
        phases = [round(rng.uniform(0.0, 0.5), 3) for _ in range(replicas)]
        # Issue 14's lifecycle edges, drawn after everything above (a seed with none of them on
        # has the world it had before they existed).
        life = Lifecycle.draw(rng)
        if calm:
            life = life.faultless()
        if life.long_outage:
            start = round(rng.uniform(1.0, 8.0), 3)
            length = round(rng.uniform(*LONG_OUTAGE_S), 3)
            timeline.append(Event(start, "lk_outage_long", "", length))
            for _ in range(rng.randint(1, 3)):  # rooms arriving while it lasts
                at = round(rng.uniform(start, start + length), 3)
                rooms.append(RoomScript(f"{ROOM_PREFIX}{len(rooms) + 1}", at=at))
            heal_at = max(heal_at, round(start + length + rng.uniform(2.0, 10.0), 3))
        rooms = _lifecycle(rng, life, rooms, heal_at)
        timeline.sort(key=lambda e: e.at)
        # Drawn last of all (a seed keeps the world it had before): about one replica crash in
        # three is a clean stop instead (its membership key deleted: its partitions move at once).
        for event in timeline:
            if event.what == "crash_replica" and rng.random() < 0.3:
                event.what = "stop_replica"
        return cls(replicas, pools, rooms, heal_at, mix, timeline, phases=phases, lifecycle=life)

    def describe(self) -> str:
        rooms = ", ".join(
            f"{r.name}"
            + (f"[{r.sid}]" if r.sid != f"RM_{r.name}" else "")
            + f"@{r.at:g}"
            + (f"-{r.end_at:g}" if r.end_at is not None else "")
            + r.flags()
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
            f"lifecycle: {self.lifecycle.describe()}",
        ]
        if events:
            lines.append(f"timeline: {events}")
        if self.rules:
            lines.append("rules: " + "; ".join(_rule(r) for r in self.rules))
        return "\n".join(lines)


def _lifecycle(
    rng: random.Random, life: Lifecycle, base: list[RoomScript], heal_at: float
) -> list[RoomScript]:
    """Each room of ``base`` as one to three incarnations with the seed's lifecycle edges."""
    rooms: list[RoomScript] = []
    last_open = heal_at + 20.0  # no incarnation opens later than this
    for first in base:
        sidless = rng.random() < life.sidless
        incarnations = 1 + sum(1 for _ in range(2) if rng.random() < life.reuse)
        room = first
        for k in range(1, incarnations + 1):
            room.sidless = sidless
            room.lost_created = rng.random() < life.lost_created
            room.lost_ended = rng.random() < life.lost_ended
            if rng.random() < life.dispatch_race and room.name.startswith(ROOM_PREFIX):
                room.doomed = rng.choice(("after_check", "on_wire"))
            elif rng.random() < life.ended_first:
                room.ended_first = True
                room.lost_created = False  # the point is its late arrival
                room.end_at = round(room.at + rng.uniform(0.2, 3.0), 3)
            rooms.append(room)
            if k == incarnations:
                break
            if room.end_at is None:
                room.end_at = round(room.at + rng.uniform(0.5, 15.0), 3)
            at = round(room.end_at + rng.uniform(0.3, 12.0), 3)
            if at > last_open:
                break
            room = RoomScript(
                room.name,
                at=at,
                end_at=round(at + rng.uniform(0.5, 30.0), 3) if rng.random() < 0.35 else None,
                region=room.region,
                sid=f"RM_{room.name}.{k + 1}",
            )
    rooms.sort(key=lambda r: r.at)
    return rooms


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
