"""Region topology: for each home region, the order in which regions may take its rooms.

Tier 0 is the home region, tiers 1..k its configured neighbours in order (nearest first). A region
that is neither is *unreachable* by default: the neighbour list is the operator's complete spill
list, which is the only way the config can express "EU rooms never leave the EU". Listing every
region as a neighbour gives global spill. ``unlisted="last"`` instead puts all other regions in one
last tier (k+1) — for callers that prefer any agent over none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Unlisted = Literal["never", "last"]


class RegionSettings(Protocol):
    @property
    def neighbours(self) -> Sequence[str]: ...


class TopologySettings(Protocol):
    """What :meth:`Topology.from_config` reads: ``shared.config.SwitchboardConfig`` has it (the
    scheduler depends on its own model only)."""

    @property
    def default_region(self) -> str: ...

    @property
    def regions(self) -> Mapping[str, RegionSettings]: ...


@dataclass(frozen=True, slots=True)
class Topology:
    default_region: str
    neighbours: Mapping[str, tuple[str, ...]]
    unlisted: Unlisted = "never"
    # home -> {region: tier}; filled lazily, never changes what a lookup answers.
    _tiers: dict[str, dict[str, int]] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_config(cls, cfg: TopologySettings, unlisted: Unlisted = "never") -> Topology:
        neighbours = {region: _dedupe(rc.neighbours) for region, rc in cfg.regions.items()}
        return cls(cfg.default_region, neighbours, unlisted)

    @property
    def regions(self) -> frozenset[str]:
        return frozenset(self.neighbours) | {self.default_region}

    def home_for(self, hint: str | None) -> str:
        """``hint`` when it is a known region, else the default region.

        An unknown hint (a typo, a region not in the config) would otherwise strand the room with
        no reachable pool; falling back to the default is what the config promises. Which hint a
        room gives is :func:`orchestrator.home_region.region_hint`'s business.
        """
        return hint if hint and hint in self.regions else self.default_region

    def tiers_for(self, home: str) -> Mapping[str, int]:
        """Region → tier for rooms homed in ``home`` (only reachable regions appear)."""
        tiers = self._tiers.get(home)
        if tiers is None:
            order = (home, *(n for n in self.neighbours.get(home, ()) if n != home))
            tiers = {region: i for i, region in enumerate(order)}
            self._tiers[home] = tiers
        return tiers

    def tier_of(self, home: str, region: str) -> int | None:
        """The tier of ``region`` for rooms homed in ``home``; None when it may never take them."""
        tiers = self.tiers_for(home)
        tier = tiers.get(region)
        if tier is None and self.unlisted == "last":
            return len(tiers)
        return tier

    def describe_tier(self, home: str, tier: int) -> str:
        """Human label of a tier, e.g. ``home region eu-central`` or ``neighbour us-east``."""
        tiers = self.tiers_for(home)
        for region, t in tiers.items():
            if t == tier:
                return f"home region {region}" if t == 0 else f"neighbour {region}"
        return "other regions"


def _dedupe(regions: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(regions))
