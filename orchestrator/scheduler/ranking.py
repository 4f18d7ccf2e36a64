"""Ranking: apply this room's reservations and exclusions to a plan, score each tier by headroom.

headroom = open slots − reserved. Candidates rank by headroom descending, then pool id (a stable,
documented tie-break). Only members a room's reservations or exclusions touch are re-scored; the
rest keep their place in the plan's precomputed ranking, so a decision costs O(reservations +
the first tier with headroom), not O(pools).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from orchestrator.scheduler.feasibility import EXCLUDED, Plan, full_reason, rank_key
from orchestrator.scheduler.model import CandidateScore


def tier_candidates(
    plan: Plan,
    i: int,
    held: Mapping[str, int],
    gone: frozenset[str],
    rejections: dict[str, str] | None = None,
) -> tuple[Sequence[CandidateScore], int]:
    """Candidates of tier ``i`` given the slots ``held`` per pool and the ``gone`` pools.

    Returns ``(candidates, ranked)``: the first ``ranked`` are the untouched members in rank order
    (precomputed per snapshot); after them come the members this room's reservations re-scored,
    in pool-id order. Selection needs no more order than that, so the hot path never sorts.
    Reasons for pools this room rejects (excluded, or full once its reservations count) go to
    ``rejections`` when given.
    """
    tier = plan.tiers[i]
    touched = tier.pools.intersection(held)
    if gone:
        touched |= tier.pools.intersection(gone)
    if not touched:
        return tier.idle, len(tier.idle)
    out = [c for c in tier.idle if c.pool not in touched]
    ranked = len(out)
    for pool in sorted(touched):
        m = tier.by_pool[pool]
        v = m.view
        if pool in gone:
            if rejections is not None:
                rejections[pool] = EXCLUDED
            continue
        r = held.get(pool, 0)
        if r <= 0:
            if m.idle is not None:
                out.append(m.idle)
            continue
        headroom = m.base - r
        if headroom > 0:
            out.append(CandidateScore(pool, v.region, tier.number, headroom, v.capacity, v.active, r))
        elif rejections is not None:
            rejections[pool] = full_reason(v, r)
    return out, ranked


def explain(
    plan: Plan, held: Mapping[str, int], gone: frozenset[str], chosen: str | None
) -> tuple[tuple[CandidateScore, ...], Mapping[str, str]]:
    """Every tier's fully ranked candidates (``chosen`` marked) and every other pool's rejection.

    Deferred until a decision's explanation is read: the choice itself needs only the first tier
    with headroom, and the explanation is O(pools). Rejections come sorted by pool id.
    """
    room_rejections: dict[str, str] = {}
    candidates: list[CandidateScore] = []
    for i in range(len(plan.tiers)):
        tier, _ = tier_candidates(plan, i, held, gone, room_rejections)
        for c in sorted(tier, key=rank_key):
            if c.pool == chosen:
                c = CandidateScore(
                    c.pool, c.region, c.tier, c.headroom, c.capacity, c.active, c.reserved, True
                )
            candidates.append(c)
    rejections = dict(plan.rejections)  # already sorted by pool id
    if room_rejections:
        new = not room_rejections.keys() <= rejections.keys()
        rejections.update(room_rejections)
        if new:
            rejections = dict(sorted(rejections.items()))
    return tuple(candidates), MappingProxyType(rejections)
