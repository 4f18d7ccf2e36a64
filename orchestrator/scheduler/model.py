"""The scheduler's plain data: the pools it chooses from, what is asked, how each pool scored, what
was decided.

Frozen, slotted dataclasses with no validation of their own: the hot path builds thousands of them
per second, and everything here is derived from already-validated messages and config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

Strategy = Literal["p2c", "least_loaded"]
STRATEGIES: tuple[Strategy, ...] = ("p2c", "least_loaded")
Liveness = Literal["alive", "draining", "dead"]


@dataclass(frozen=True, slots=True)
class PoolView:
    """One pool as the scheduler sees it at one instant (the pool registry,
    :mod:`orchestrator.pools`, folds worker heartbeats into these).

    ``capacity`` and ``active`` are sums over live workers (draining ones included, so ``status``
    shows the jobs still running there). ``open_slots`` is what the scheduler may still fill: the
    sum of ``max(0, capacity - active)`` over live workers that are *not* draining — a draining
    worker's spare capacity is not real, and one overloaded worker does not hide another's room
    (LiveKit picks the worker). ``None`` means ``capacity - active`` (handy for hand-made views).
    """

    pool: str
    agent: str
    region: str
    agent_name: str
    workers: int
    capacity: int
    active: int
    load: float
    draining: bool
    liveness: Liveness
    # Seconds since the last beat from any worker of the pool; None: never heard from (pinned).
    age_s: float | None
    jobs: AbstractSet[str] = frozenset()
    open_slots: int | None = None
    # Its region (another than the replica's) has been silent as a whole for longer than a pool's
    # death limit: cut off or being lost. Its agents keep their rooms (it is not dead), but no new
    # room is placed on it: nothing could confirm the placement, and a neighbour can serve the
    # room now rather than after region_lost_after_s.
    silent: bool = False


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """One room to place.

    ``agent`` comes from the matched rule; ``region`` is the home region the caller resolved (the
    event's region, else the room metadata's, else the config default — see
    ``orchestrator.home_region``); ``excluded`` are pools that already failed this room.
    """

    room: str
    agent: str
    region: str
    excluded: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CandidateScore:
    """A pool that could take the room, with the numbers it was ranked on.

    ``headroom`` = open slots (capacity − active, over accepting workers) − ``reserved``; always > 0
    for a candidate. ``tier`` 0 is the home region, 1.. the configured neighbours in order.
    """

    pool: str
    region: str
    tier: int
    headroom: int
    capacity: int
    active: int
    reserved: int
    chosen: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "region": self.region,
            "tier": self.tier,
            "headroom": self.headroom,
            "capacity": self.capacity,
            "active": self.active,
            "reserved": self.reserved,
            "chosen": self.chosen,
        }


Explained = tuple[tuple[CandidateScore, ...], Mapping[str, str]]


class Explanation:
    """A decision's candidates and rejections, built on first read and then kept.

    Choosing a pool needs only the nearest tier with headroom; the full explanation is O(pools), so
    it is deferred until someone reads it (``to_dict`` for the KV record, ``explain``). It is built
    from immutable inputs captured at decision time, so reading it later gives the same answer.
    """

    __slots__ = ("_build", "_value")

    def __init__(self, build: Callable[[], Explained]) -> None:
        self._build: Callable[[], Explained] | None = build
        self._value: Explained | None = None

    @classmethod
    def of(cls, candidates: tuple[CandidateScore, ...], rejections: Mapping[str, str]) -> Explanation:
        done = cls(lambda: (candidates, rejections))
        done.get()
        return done

    def get(self) -> Explained:
        if self._value is None:
            assert self._build is not None
            self._value = self._build()
            self._build = None  # drop the captured plan: it pins the whole snapshot
        return self._value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Explanation):
            return NotImplemented
        (mine, my_rej), (theirs, their_rej) = self.get(), other.get()
        return mine == theirs and dict(my_rej) == dict(their_rej)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a room goes (``pool`` None: nowhere yet) and everything needed to explain it.

    ``candidates`` are the feasible pools of every tier, ranked (tier, then headroom descending,
    then pool id); exactly one has ``chosen`` set when ``pool`` is not None. ``rejections`` maps
    every other pool in the snapshot to the reason it was not a candidate (read-only). Both are
    computed on first access (see :class:`Explanation`). ``sampled`` are the pools
    power-of-two-choices compared (empty for least-loaded); with ``strategy`` and ``seed`` they
    make the choice reproducible.
    """

    room: str
    agent: str
    home: str
    pool: str | None
    agent_name: str | None
    region: str | None
    tier: int | None
    reason: str
    strategy: Strategy
    seed: int
    sampled: tuple[str, ...]
    explanation: Explanation = field(repr=False)

    @property
    def candidates(self) -> tuple[CandidateScore, ...]:
        return self.explanation.get()[0]

    @property
    def rejections(self) -> Mapping[str, str]:
        return self.explanation.get()[1]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the KV decision record); rejections sorted by pool id.

        O(pools in the snapshot): every pool not chosen appears with its reason.
        """
        candidates, rejections = self.explanation.get()
        return {
            "room": self.room,
            "agent": self.agent,
            "home": self.home,
            "pool": self.pool,
            "agent_name": self.agent_name,
            "region": self.region,
            "tier": self.tier,
            "reason": self.reason,
            "strategy": self.strategy,
            "seed": self.seed,
            "sampled": list(self.sampled),
            "candidates": [c.to_dict() for c in candidates],
            "rejections": dict(rejections),  # sorted by pool id when built
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """Inverse of :meth:`to_dict` (for ``explain`` reading a stored record)."""
        strategy = data["strategy"]
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}")
        return cls(
            room=data["room"],
            agent=data["agent"],
            home=data["home"],
            pool=data["pool"],
            agent_name=data["agent_name"],
            region=data["region"],
            tier=data["tier"],
            reason=data["reason"],
            strategy=strategy,
            seed=data["seed"],
            sampled=tuple(data["sampled"]),
            explanation=Explanation.of(
                tuple(CandidateScore(**c) for c in data["candidates"]),
                MappingProxyType(dict(data["rejections"])),
            ),
        )
