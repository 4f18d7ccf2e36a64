"""The scheduler's plain data: what is asked, how each pool scored, what was decided.

Frozen, slotted dataclasses with no validation of their own: the hot path builds thousands of them
per second, and everything here is derived from already-validated messages and config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Strategy = Literal["p2c", "least_loaded"]
STRATEGIES: tuple[Strategy, ...] = ("p2c", "least_loaded")


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """One room to place.

    ``agent`` comes from the matched rule; ``region`` is the home region the caller resolved (event
    hint, else room metadata, else the config default — see :meth:`Topology.home_for`);
    ``excluded`` are pools that already failed this room.
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


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a room goes (``pool`` None: nowhere yet) and everything needed to explain it.

    ``candidates`` are the feasible pools of every tier, ranked (tier, then headroom descending,
    then pool id); exactly one has ``chosen`` set when ``pool`` is not None. ``rejections`` maps
    every other pool in the snapshot to the reason it was not a candidate. ``sampled`` are the pools
    power-of-two-choices compared (empty for least-loaded or no choice); with ``strategy`` and
    ``seed`` they make the choice reproducible.
    """

    room: str
    agent: str
    home: str
    pool: str | None
    agent_name: str | None
    region: str | None
    tier: int | None
    reason: str
    candidates: tuple[CandidateScore, ...]
    rejections: Mapping[str, str]
    strategy: Strategy
    seed: int
    sampled: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the KV decision record); rejections sorted by pool id."""
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
            "candidates": [c.to_dict() for c in self.candidates],
            "rejections": dict(sorted(self.rejections.items())),
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
            candidates=tuple(CandidateScore(**c) for c in data["candidates"]),
            rejections=dict(data["rejections"]),
            strategy=strategy,
            seed=data["seed"],
            sampled=tuple(data["sampled"]),
        )
