"""LiveKit webhook event → Switchboard room event. Pure: no I/O, no clock.

``room_started`` → :class:`RoomCreated` (dedupe id = room sid, so LiveKit's retries and the second
``room_started`` that CreateDispatch's room auto-create fires are stored once); ``room_finished`` →
:class:`RoomEnded`; anything else → ``None`` (ignored). The event's region is the room metadata's
``region`` (:func:`orchestrator.home_region.region_hint`), else the ingest's region.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from livekit.protocol.webhook import WebhookEvent
from pydantic import ValidationError

from orchestrator.home_region import region_hint
from orchestrator.override import without_reserved
from shared.codec import describe_validation_error
from shared.messages import RoomCreated, RoomEnded

M = TypeVar("M", RoomCreated, RoomEnded)


class BadEvent(ValueError):
    """The event is signed correctly but cannot become a room event (e.g. a room name too long)."""


@dataclass(frozen=True, slots=True)
class Translation:
    message: RoomCreated | RoomEnded | None
    # Why the room's metadata was not used as-is (for a debug/warning log; never the metadata).
    note: str | None = None


def translate(event: WebhookEvent, default_region: str) -> Translation:
    if event.event == "room_started":
        return _room_started(event, default_region)
    if event.event == "room_finished":
        return Translation(_build(RoomEnded, room=event.room.name, sid=event.room.sid or None))
    return Translation(None)


def _room_started(event: WebhookEvent, default_region: str) -> Translation:
    room = event.room
    return room_created(
        room.name,
        room.sid or None,
        room.metadata,
        room.creation_time_ms or room.creation_time * 1000,
        default_region,
    )


def room_created(
    name: str, sid: str | None, raw_metadata: str, created_ms: int | float, default_region: str
) -> Translation:
    """The room event of a LiveKit room, from its webhook or from ListRooms (the resync): one
    translation, so a room found either way is the same event."""
    metadata, note = parse_room_metadata(raw_metadata)
    # Room metadata is often the end user's to set: keys of ours in it are not obeyed (issue 17).
    metadata, dropped = without_reserved(metadata)
    if dropped:
        note = f"room metadata keys {', '.join(sorted(dropped))} are reserved for Switchboard; dropped"
    # A webhook names no region of its own: the metadata's, else the one this ingest serves.
    region = region_hint(None, metadata)
    if region is None:
        region = default_region
        if (metadata or {}).get("region") is not None:
            note = "room metadata 'region' is not a valid region name; using the configured region"
    created_at = datetime.fromtimestamp(created_ms / 1000, UTC) if created_ms else None
    message = _build(
        RoomCreated,
        room=name,
        sid=sid,
        region=region,
        metadata=metadata,
        created_at=created_at,
    )
    return Translation(message, note)


def parse_room_metadata(raw: str) -> tuple[dict[str, object] | None, str | None]:
    """The room metadata when it is a JSON object; otherwise None and a note saying why."""
    if not raw:
        return None, None
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return None, "room metadata is not JSON; not passed on"
    if not isinstance(value, dict):
        return None, "room metadata is JSON but not an object; not passed on"
    return value, None


def _build(model: type[M], **fields: object) -> M:
    if not fields.get("room"):
        raise BadEvent(f"{model.__name__}: the webhook has no room name")
    try:
        return model.model_validate(fields, strict=False)
    except ValidationError as exc:
        raise BadEvent(f"{model.__name__}: {describe_validation_error(exc)}") from None
