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

from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from orchestrator.scheduler.feasibility import PoolIndex
from orchestrator.scheduler.model import (
    STRATEGIES,
    CandidateScore,
    Decision,
    Explanation,
    Liveness,
    PoolView,
    ScheduleRequest,
    Strategy,
)
from orchestrator.scheduler.ranking import explain
from orchestrator.scheduler.ranking import tier_candidates as tier_candidates_of
from orchestrator.scheduler.select import decision_seed, least_loaded, p2c
from orchestrator.scheduler.topology import Topology, Unlisted

__all__ = [
    "STRATEGIES",
    "CandidateScore",
    "Decision",
    "Explanation",
    "Liveness",
    "PoolIndex",
    "PoolView",
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
    id → slots held by dispatches not yet visible in heartbeats (the orchestrator passes
    ``RoomIndex.reserved``); it is read during the call only, never kept.
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
    # Captured, not referenced: the caller's reservations keep changing after this call returns.
    held = dict(reserved) if reserved else _NOTHING_HELD
    gone = req.excluded

    # Spill: the first tier with any candidate; a tier is skipped only when it has no headroom.
    for t in range(len(plan.tiers)):
        tier_candidates, ranked = tier_candidates_of(plan, t, held, gone)
        if tier_candidates:
            break
    else:
        explanation = Explanation(lambda: explain(plan, held, gone, None))
        return Decision(
            room=req.room,
            agent=req.agent,
            home=req.region,
            pool=None,
            agent_name=None,
            region=None,
            tier=None,
            reason=_why_none(req, plan.agent_pools, explanation.get()[1]),
            strategy=strategy,
            seed=seed,
            sampled=(),
            explanation=explanation,
        )

    pick, other = p2c(tier_candidates, seed) if strategy == "p2c" else least_loaded(tier_candidates, ranked)
    chosen = tier_candidates[pick]
    runner_up = tier_candidates[other] if other >= 0 else None
    tier = plan.tiers[t]
    why = _why_chosen(strategy, chosen, runner_up, len(tier_candidates))
    if tier.number > 0:
        why = f"spilled to tier {tier.number} ({tier.label}): no headroom nearer home {req.region}; {why}"
    else:
        why = f"{why} in tier 0 ({tier.label})"
    # Positional: this is the hot path, and keywords cost a third of the constructor's time.
    return Decision(
        req.room,
        req.agent,
        req.region,
        chosen.pool,
        plan.agent_names[chosen.pool],
        chosen.region,
        chosen.tier,
        why,
        strategy,
        seed,
        (chosen.pool, runner_up.pool) if runner_up else (chosen.pool,) if strategy == "p2c" else (),
        Explanation(lambda: explain(plan, held, gone, chosen.pool)),
    )


_NOTHING_HELD: Mapping[str, int] = MappingProxyType({})


def _why_chosen(strategy: Strategy, chosen: CandidateScore, other: CandidateScore | None, n: int) -> str:
    if n == 1:
        return f"chose {chosen.pool!r} (headroom {chosen.headroom}), the only candidate"
    if strategy == "least_loaded" or other is None:
        return f"chose {chosen.pool!r}, most headroom ({chosen.headroom}) of {n} candidates"
    tie = "equal headroom, lower pool id" if other.headroom == chosen.headroom else "more headroom"
    return (
        f"p2c sampled {chosen.pool!r} (headroom {chosen.headroom}) and {other.pool!r} "
        f"(headroom {other.headroom}) of {n} candidates; chose {chosen.pool!r} ({tie})"
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
