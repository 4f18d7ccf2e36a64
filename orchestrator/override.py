"""The manual-dispatch override carried inside ``RoomCreated.metadata``.

``switchboard dispatch ROOM --agent A --pool P`` publishes a RoomCreated on ``switchboard.rooms.manual``
whose metadata holds ``{"_switchboard_override": {"manual": true, "agent": A, "pool": P, ...}}``.
The controller reads it (agent instead of the rule's, pool instead of the scheduler's choice) and
strips it before the metadata reaches the agent.

Only that subject carries an override (issue 17): only the operator's NATS user may publish there,
while room metadata is often set by the end user's own client. So every key with the reserved
``_switchboard`` prefix is dropped from LiveKit room metadata by the ingest and the resync
(:func:`without_reserved`), and an override arriving on ``switchboard.rooms.created`` is ignored
(:func:`untrusted`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.messages import Identifier, PoolId, RoomCreated

OVERRIDE_KEY = "_switchboard_override"
# Keys of ours inside metadata (the override here, ``_switchboard`` in a dispatch's metadata).
RESERVED_PREFIX = "_switchboard"


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


def without_reserved(metadata: dict[str, Any] | None) -> tuple[dict[str, Any] | None, list[str]]:
    """``metadata`` without the keys of the reserved prefix, and the keys dropped."""
    if not metadata:
        return metadata, []
    dropped = [k for k in metadata if k.startswith(RESERVED_PREFIX)]
    if not dropped:
        return metadata, []
    return {k: v for k, v in metadata.items() if k not in dropped} or None, dropped


def untrusted(event: RoomCreated) -> tuple[RoomCreated, bool]:
    """A room event from the ordinary subject, with any override in its metadata dropped; True when
    there was one (whoever could set the room's metadata asked for an agent or a pool)."""
    if not event.metadata or OVERRIDE_KEY not in event.metadata:
        return event, False
    metadata = {k: v for k, v in event.metadata.items() if k != OVERRIDE_KEY}
    return event.model_copy(update={"metadata": metadata or None}), True
