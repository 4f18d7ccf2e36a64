"""Feasibility: which pools may take a room of agent A homed in region H, and why the others may not.

Everything decided here depends only on the pool snapshot and the topology, not on reservations or
on the room, so it is computed once per (agent, home) and per snapshot and cached in a
:class:`PoolIndex`. The per-room work (reservations, exclusions) is in :mod:`.ranking`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.scheduler.model import CandidateScore, PoolView
from orchestrator.scheduler.topology import Topology

EXCLUDED = "excluded after failed attempt"


def full_reason(view: PoolView, reserved: int) -> str:
    return f"full (capacity {view.capacity}, active {view.active}, reserved {reserved})"


def base_headroom(view: PoolView) -> int:
    """Slots the pool reports free, before reservations."""
    return view.open_slots if view.open_slots is not None else view.capacity - view.active


def static_rejection(view: PoolView, agent: str, home: str, tier: int | None) -> str | None:
    """Why ``view`` can never take this room whatever the reservations; None if it might.

    Order matters for the reason shown: another agent's pool is irrelevant whatever its health, and
    health comes before geography.
    """
    if view.agent != agent:
        return f"wrong agent (serves {view.agent})"
    if view.liveness == "dead":
        age = "no heartbeat yet" if view.age_s is None else f"no heartbeat for {view.age_s:.1f} s"
        return f"dead ({age})"
    if view.liveness == "draining" or view.draining:
        return "draining"
    if view.silent:
        return f"region {view.region} silent (cut off or lost): keeps its rooms, takes no new ones"
    if tier is None:
        return f"region {view.region} not reachable from home {home}"
    return None


@dataclass(frozen=True, slots=True)
class Member:
    """A statically feasible pool: its view, free slots before reservations, and the candidate it is
    when nothing is reserved on it (None when it is full even so)."""

    view: PoolView
    base: int
    idle: CandidateScore | None


@dataclass(frozen=True, slots=True)
class Tier:
    number: int
    label: str
    members: tuple[Member, ...]
    # The ranked candidates when no member is reserved or excluded — the common case, shared.
    idle: tuple[CandidateScore, ...]
    # Member pool ids: C-speed set operations find the members a room's reservations touch.
    pools: frozenset[str]
    by_pool: Mapping[str, Member]


@dataclass(frozen=True, slots=True)
class Plan:
    """Feasibility of one snapshot for one (agent, home region)."""

    agent: str
    home: str
    tiers: tuple[Tier, ...]
    # pool -> index into ``tiers``, for every statically feasible pool (full ones included).
    where: Mapping[str, int]
    # A plain dict (never mutated after build) so a decision can layer its own rejections on top
    # with a ChainMap instead of copying it; decisions expose it read-only.
    rejections: dict[str, str]
    agent_pools: tuple[str, ...]
    agent_names: Mapping[str, str]


def rank_key(c: CandidateScore) -> tuple[int, str]:
    return (-c.headroom, c.pool)


def build_plan(pools: Sequence[PoolView], topology: Topology, agent: str, home: str) -> Plan:
    rejections: dict[str, str] = {}
    by_tier: dict[int, list[Member]] = {}
    agent_pools: list[str] = []
    agent_names: dict[str, str] = {}
    for view in pools:
        if view.agent != agent:
            # Most of a large snapshot serves other agents: reject them without further checks.
            rejections[view.pool] = f"wrong agent (serves {view.agent})"
            continue
        agent_pools.append(view.pool)
        agent_names[view.pool] = view.agent_name
        tier = topology.tier_of(home, view.region)
        why = static_rejection(view, agent, home, tier)
        if why is not None or tier is None:
            rejections[view.pool] = why or "unreachable"
            continue
        base = base_headroom(view)
        idle = None
        if base > 0:
            idle = CandidateScore(view.pool, view.region, tier, base, view.capacity, view.active, 0)
        else:
            rejections[view.pool] = full_reason(view, 0)
        by_tier.setdefault(tier, []).append(Member(view, base, idle))
    tiers = tuple(
        Tier(
            number=n,
            label=topology.describe_tier(home, n),
            members=tuple(members),
            idle=tuple(sorted((m.idle for m in members if m.idle is not None), key=rank_key)),
            pools=frozenset(m.view.pool for m in members),
            by_pool={m.view.pool: m for m in members},
        )
        for n, members in sorted(by_tier.items())
    )
    where = {m.view.pool: i for i, t in enumerate(tiers) for m in t.members}
    rejections = dict(sorted(rejections.items()))
    return Plan(
        agent=agent,
        home=home,
        tiers=tiers,
        where=where,
        rejections=rejections,
        agent_pools=tuple(agent_pools),
        agent_names=agent_names,
    )


class PoolIndex:
    """One pool snapshot prepared for many decisions.

    Build it once per registry snapshot (``PoolIndex(registry.snapshot(now), topology)``) and pass
    it to :func:`orchestrator.scheduler.schedule` instead of the list: the per-(agent, home)
    feasibility is then computed once, and each decision costs O(reserved + excluded pools + one
    tier) instead of O(pools). Immutable from the outside; the plan cache only memoises.
    """

    __slots__ = ("_plans", "pools", "topology")

    def __init__(self, pools: Sequence[PoolView], topology: Topology) -> None:
        self.pools: tuple[PoolView, ...] = tuple(pools)
        self.topology = topology
        seen: set[str] = set()
        for view in self.pools:
            if view.pool in seen:
                raise ValueError(f"pool {view.pool!r} appears twice in the snapshot")
            seen.add(view.pool)
        self._plans: dict[tuple[str, str], Plan] = {}

    def plan(self, agent: str, home: str) -> Plan:
        key = (agent, home)
        plan = self._plans.get(key)
        if plan is None:
            plan = build_plan(self.pools, self.topology, agent, home)
            self._plans[key] = plan
        return plan
