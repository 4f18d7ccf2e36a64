"""Webhook event → room event: the pure translation the ingest applies after verifying."""

from __future__ import annotations

import pytest
from livekit.protocol.models import Room
from livekit.protocol.webhook import WebhookEvent

from orchestrator.ingest.translate import BadEvent, translate
from orchestrator.override import OVERRIDE_KEY, read_override, untrusted
from shared.messages import RoomCreated, RoomEnded


def started(name: str = "ornina-1", sid: str = "RM_1", metadata: str = "", created: int = 0) -> WebhookEvent:
    return WebhookEvent(
        event="room_started", room=Room(name=name, sid=sid, metadata=metadata, creation_time=created)
    )


@pytest.mark.parametrize(
    ("metadata", "region", "user_metadata", "noted"),
    [
        ("", "eu-central", None, False),
        ('{"region": "us-east", "lang": "de"}', "us-east", {"region": "us-east", "lang": "de"}, False),
        ('{"lang": "de"}', "eu-central", {"lang": "de"}, False),
        ('{"region": "US East!"}', "eu-central", {"region": "US East!"}, True),
        ("not json", "eu-central", None, True),
        ('["a list"]', "eu-central", None, True),
        # Keys of ours are not the room metadata's to set (issue 17): dropped, and noted.
        ('{"lang": "de", "_switchboard_override": {"pool": "x"}}', "eu-central", {"lang": "de"}, True),
        ('{"_switchboard": {"attempt": 9}}', "eu-central", None, True),
    ],
)
def test_room_started_region_and_metadata(
    metadata: str, region: str, user_metadata: object, noted: bool
) -> None:
    result = translate(started(metadata=metadata, created=1_700_000_000), "eu-central")
    msg = result.message
    assert isinstance(msg, RoomCreated)
    assert (msg.room, msg.sid, msg.region, msg.metadata) == ("ornina-1", "RM_1", region, user_metadata)
    assert msg.dedupe_id() == "RM_1"
    assert msg.created_at is not None and msg.created_at.timestamp() == 1_700_000_000
    assert (result.note is not None) == noted


def test_room_finished_becomes_room_ended() -> None:
    event = WebhookEvent(event="room_finished", room=Room(name="ornina-1", sid="RM_1"))
    assert translate(event, "eu-central").message == RoomEnded(room="ornina-1", sid="RM_1")


@pytest.mark.parametrize("kind", ["participant_joined", "track_published", "egress_ended", ""])
def test_other_events_are_ignored(kind: str) -> None:
    assert translate(WebhookEvent(event=kind, room=Room(name="x")), "eu-central").message is None


@pytest.mark.parametrize("name", ["", "x" * 300])
def test_unrepresentable_room_is_a_bad_event(name: str) -> None:
    with pytest.raises(BadEvent):
        translate(started(name=name), "eu-central")


def test_an_override_on_the_ordinary_subject_is_dropped_and_said() -> None:
    event = RoomCreated(room="vip-1", metadata={"lang": "de", OVERRIDE_KEY: {"pool": "us-east-a"}})
    kept, overridden = untrusted(event)
    assert overridden and kept.metadata == {"lang": "de"} and read_override(kept.metadata) is None
    plain = RoomCreated(room="vip-2", metadata={"lang": "de"})
    assert untrusted(plain) == (plain, False)
    only = RoomCreated(room="vip-3", metadata={OVERRIDE_KEY: {"pool": "us-east-a"}})
    assert untrusted(only)[0].metadata is None
