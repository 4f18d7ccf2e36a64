"""Ranking: apply this room's reservations and exclusions to a plan, rank each tier by headroom.

headroom = open slots − reserved. Within a tier candidates are ranked by headroom descending, then
pool id (a stable, documented tie-break). Only tiers holding a reserved or excluded pool are
re-ranked; the others reuse the plan's precomputed ranking, which keeps a decision cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.scheduler.feasibility import EXCLUDED, Plan, full_reason, rank_key
from orchestrator.scheduler.model import CandidateScore


@dataclass(frozen=True, slots=True)
class Ranked:
    """Per tier of the plan, its ranked candidates; plus the rejections this room added."""

    tiers: tuple[tuple[CandidateScore, ...], ...]
    rejections: dict[str, str]


def _reserved_in_plan(plan: Plan, reserved: Mapping[str, int]) -> dict[str, int]:
    where = plan.where
    # Walk the smaller side: usually few pools hold reservations.
    if len(reserved) <= len(where):
        return {p: r for p, r in reserved.items() if r > 0 and p in where}
    return {p: r for p in where if (r := reserved.get(p, 0)) > 0}


def rank(plan: Plan, reserved: Mapping[str, int], excluded: frozenset[str]) -> Ranked:
    held = _reserved_in_plan(plan, reserved) if reserved else {}
    gone = excluded.intersection(plan.where) if excluded else frozenset()
    tiers = [t.idle for t in plan.tiers]
    rejections: dict[str, str] = {}
    if not held and not gone:
        return Ranked(tuple(tiers), rejections)
    for i in {plan.where[p] for p in (*held, *gone)}:
        tier = plan.tiers[i]
        out: list[CandidateScore] = []
        for m in tier.members:
            v = m.view
            if v.pool in gone:
                rejections[v.pool] = EXCLUDED
                continue
            r = held.get(v.pool, 0)
            if not r:
                if m.idle is not None:
                    out.append(m.idle)
                continue
            headroom = m.base - r
            if headroom <= 0:
                rejections[v.pool] = full_reason(v, r)
                continue
            out.append(CandidateScore(v.pool, v.region, tier.number, headroom, v.capacity, v.active, r))
        out.sort(key=rank_key)
        tiers[i] = tuple(out)
    return Ranked(tuple(tiers), rejections)
