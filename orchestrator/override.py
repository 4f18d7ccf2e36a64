"""The manual-dispatch override carried inside ``RoomCreated.metadata``.

``switchboard dispatch ROOM --agent A --pool P`` publishes an ordinary RoomCreated whose metadata
holds ``{"_switchboard_override": {"manual": true, "agent": A, "pool": P, "requested_by": ...}}``.
The controller reads it (agent instead of the rule's, pool instead of the scheduler's choice) and
strips it before the metadata reaches the agent. The key starts with an underscore like the
``_switchboard`` key of the dispatch metadata: user metadata should not use that prefix.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.messages import Identifier, PoolId

OVERRIDE_KEY = "_switchboard_override"


class DispatchOverride(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    manual: bool = True
    agent: Identifier | None = None
    pool: PoolId | None = None
    requested_by: str | None = None
    reason: str | None = None


def with_override(metadata: dict[str, Any] | None, override: DispatchOverride) -> dict[str, Any]:
    return {**(metadata or {}), OVERRIDE_KEY: override.model_dump(exclude_none=True)}


def read_override(metadata: dict[str, Any] | None) -> DispatchOverride | None:
    raw = (metadata or {}).get(OVERRIDE_KEY)
    if not isinstance(raw, dict):
        return None
    try:
        return DispatchOverride.model_validate(raw)
    except ValueError:
        return None
