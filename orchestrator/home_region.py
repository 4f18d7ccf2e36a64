"""A room's home region, decided one way by the ingest, the controller and ``switchboard dispatch``.

The event's ``region``, else the room metadata's ``region``, else the configured ``default_region``;
a region the config does not list falls back to the default too (README, "Configure rules, regions
and pools"). The first hint given is the one that counts: an unknown event region is not passed
over for the metadata's, it sends the room to the default region.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from orchestrator.scheduler.topology import Topology
from shared.messages import REGION_PATTERN

_REGION = re.compile(REGION_PATTERN)


def region_hint(region: str | None, metadata: Mapping[str, object] | None) -> str | None:
    """The region a room asks for: the event's ``region``, else its metadata's ``region`` key.

    None when neither gives one, or when the one given is not a valid region name (it could never
    be a configured region, and it cannot go into a ``RoomCreated``).
    """
    hint = region or (metadata or {}).get("region")
    return hint if isinstance(hint, str) and _REGION.fullmatch(hint) else None


def home_region(region: str | None, metadata: Mapping[str, object] | None, topology: Topology) -> str:
    """The room's home region: its :func:`region_hint` when the topology knows that region, else
    the default region."""
    return topology.home_for(region_hint(region, metadata))
