"""The scheduler: a pure function from (room, pool snapshot, reservations, topology, seed) to a
:class:`Decision`, as a pipeline of small steps in the manner of Nomad's scheduler:

1. feasibility (:mod:`.feasibility`) — reject dead, draining, wrong-agent and unreachable pools,
   and split the rest into region tiers (home, then neighbours in order);
2. ranking (:mod:`.ranking`) — headroom = open slots − reserved; reject excluded and full pools;
   rank each tier by headroom;
3. selection (:mod:`.select`) — the first tier with any candidate (spill only when every nearer
   tier is out of headroom), then power-of-two-choices (or least-loaded) inside it.

No I/O, no clock, no global randomness: the same inputs and seed give the same decision, and every
pool not chosen has its reason recorded.
"""

from __future__ import annotations

from collections import ChainMap, Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from orchestrator.pools import PoolView
from orchestrator.scheduler.feasibility import PoolIndex
from orchestrator.scheduler.model import STRATEGIES, CandidateScore, Decision, ScheduleRequest, Strategy
from orchestrator.scheduler.ranking import rank
from orchestrator.scheduler.select import decision_seed, least_loaded, p2c
from orchestrator.scheduler.topology import Topology, Unlisted

__all__ = [
    "STRATEGIES",
    "CandidateScore",
    "Decision",
    "PoolIndex",
    "ScheduleRequest",
    "Strategy",
    "Topology",
    "Unlisted",
    "decision_seed",
    "schedule",
]


def schedule(
    req: ScheduleRequest,
    pools: Sequence[PoolView] | PoolIndex,
    reserved: Mapping[str, int],
    topology: Topology,
    seed: int,
    strategy: Strategy = "p2c",
) -> Decision:
    """Choose the pool for ``req`` (or none, with the reason) — pure and deterministic.

    ``pools`` is a registry snapshot, or a :class:`PoolIndex` of one built with the same
    ``topology`` (much faster when many rooms are placed on one snapshot). ``reserved`` maps pool
    id → slots held by dispatches not yet visible in heartbeats (``Reservations.counts()``).
    """
    if isinstance(pools, PoolIndex):
        if pools.topology is not topology and pools.topology != topology:
            raise ValueError("the PoolIndex was built with a different topology")
        index = pools
    else:
        index = PoolIndex(pools, topology)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")

    plan = index.plan(req.agent, req.region)
    ranked = rank(plan, reserved, req.excluded)
    layers = ChainMap(ranked.rejections, plan.rejections) if ranked.rejections else plan.rejections
    rejections: Mapping[str, str] = MappingProxyType(layers)

    # Spill: the first tier with any candidate; a tier is skipped only when it has no headroom.
    t = next((i for i, cands in enumerate(ranked.tiers) if cands), None)
    if t is None:
        return Decision(
            room=req.room,
            agent=req.agent,
            home=req.region,
            pool=None,
            agent_name=None,
            region=None,
            tier=None,
            reason=_why_none(req, plan.agent_pools, rejections),
            candidates=(),
            rejections=rejections,
            strategy=strategy,
            seed=seed,
        )

    tier_candidates = ranked.tiers[t]
    if strategy == "p2c":
        pick, sampled_at = p2c(tier_candidates, seed)
    else:
        pick, sampled_at = least_loaded(tier_candidates)
    chosen = tier_candidates[pick]
    tier = plan.tiers[t]
    why = _why_chosen(strategy, chosen, [tier_candidates[i] for i in sampled_at], len(tier_candidates))
    if tier.number > 0:
        why = f"spilled to tier {tier.number} ({tier.label}): no headroom nearer home {req.region}; {why}"
    else:
        why = f"{why} in tier 0 ({tier.label})"

    marked = CandidateScore(
        chosen.pool,
        chosen.region,
        chosen.tier,
        chosen.headroom,
        chosen.capacity,
        chosen.active,
        chosen.reserved,
        True,
    )
    # Earlier tiers are empty; later ones are listed too, so `explain` shows where spill would go.
    after = tuple(c for ts in ranked.tiers[t + 1 :] for c in ts)
    candidates = (*tier_candidates[:pick], marked, *tier_candidates[pick + 1 :], *after)
    return Decision(
        room=req.room,
        agent=req.agent,
        home=req.region,
        pool=chosen.pool,
        agent_name=plan.agent_names[chosen.pool],
        region=chosen.region,
        tier=chosen.tier,
        reason=why,
        candidates=candidates,
        rejections=rejections,
        strategy=strategy,
        seed=seed,
        sampled=tuple(tier_candidates[i].pool for i in sampled_at),
    )


def _why_chosen(strategy: Strategy, chosen: CandidateScore, sampled: list[CandidateScore], n: int) -> str:
    if n == 1:
        return f"chose {chosen.pool!r} (headroom {chosen.headroom}), the only candidate"
    if strategy == "least_loaded":
        return f"chose {chosen.pool!r}, most headroom ({chosen.headroom}) of {n} candidates"
    a, b = sampled
    other = b if a.pool == chosen.pool else a
    tie = "equal headroom, lower pool id" if other.headroom == chosen.headroom else "more headroom"
    return (
        f"p2c sampled {a.pool!r} (headroom {a.headroom}) and {b.pool!r} (headroom {b.headroom}) "
        f"of {n} candidates; chose {chosen.pool!r} ({tie})"
    )


# The first word of a rejection reason names its category (see feasibility / ranking).
_CATEGORY = {
    "dead": "dead",
    "draining": "draining",
    "full": "full",
    "excluded": "excluded",
    "region": "unreachable",
}


def _why_none(req: ScheduleRequest, agent_pools: tuple[str, ...], rejections: Mapping[str, str]) -> str:
    if not agent_pools:
        return f"no pool serves agent {req.agent!r}"
    counts = Counter(_CATEGORY.get(rejections[p].split(" ", 1)[0], "other") for p in agent_pools)
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    n = len(agent_pools)
    return f"all {n} pools of agent {req.agent!r} are unavailable from home {req.region}: {summary}"
