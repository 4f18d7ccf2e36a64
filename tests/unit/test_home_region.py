"""A room's home region, decided one way by the ingest, the controller and `switchboard dispatch`:
the event's region, else the metadata's ``region``, else ``default_region``; unknown → default."""

from __future__ import annotations

import pytest

from orchestrator.home_region import home_region, region_hint
from orchestrator.ops.dispatch import LiveKitRoom, manual_event
from orchestrator.override import OVERRIDE_KEY, DispatchOverride
from orchestrator.scheduler import Topology

TOPO = Topology("eu-central", {"eu-central": ("us-east",), "us-east": ("eu-central",)})


@pytest.mark.parametrize(
    ("region", "metadata", "hint", "home"),
    [
        ("us-east", {"region": "eu-central"}, "us-east", "us-east"),  # the event's region first
        (None, {"region": "us-east", "lang": "de"}, "us-east", "us-east"),  # then the metadata's
        (None, {"lang": "de"}, None, "eu-central"),  # then the default
        (None, None, None, "eu-central"),
        ("mars", None, "mars", "eu-central"),  # unknown: the default
        (None, {"region": "mars"}, "mars", "eu-central"),
        # The first region given counts: an unknown event region is not passed over.
        ("mars", {"region": "us-east"}, "mars", "eu-central"),
        # Not a region name (or not a string, or empty): no region given.
        (None, {"region": "US East!"}, None, "eu-central"),
        (None, {"region": 7}, None, "eu-central"),
        (None, {"region": ""}, None, "eu-central"),
        ("", {"region": "us-east"}, "us-east", "us-east"),
    ],
)
def test_home_region(
    region: str | None, metadata: dict[str, object] | None, hint: str | None, home: str
) -> None:
    assert region_hint(region, metadata) == hint
    assert home_region(region, metadata, TOPO) == home


OVERRIDE = DispatchOverride(agent="ornina", requested_by="ops@host")


def test_manual_dispatch_honours_the_rooms_metadata_region() -> None:
    found = LiveKitRoom(sid="RM_1", metadata='{"region": "us-east", "lang": "de"}')
    event = manual_event("vip-1", found, OVERRIDE)
    assert event.region == "us-east"
    assert event.sid == "RM_1" and event.metadata is not None
    assert event.metadata["lang"] == "de" and OVERRIDE_KEY in event.metadata
    # The controller resolves the published event to the same home region.
    assert home_region(event.region, event.metadata, TOPO) == "us-east"


@pytest.mark.parametrize(
    ("metadata", "region", "published", "home"),
    [
        ('{"region": "us-east"}', "eu-central", "eu-central", "eu-central"),  # --region wins
        ('{"region": "mars"}', None, "mars", "eu-central"),  # unknown: the controller's default
        ('{"lang": "de"}', None, None, "eu-central"),
        ("not json", "us-east", "us-east", "us-east"),
    ],
)
def test_manual_dispatch_resolves_like_the_controller(
    metadata: str, region: str | None, published: str | None, home: str
) -> None:
    event = manual_event("vip-1", LiveKitRoom(sid=None, metadata=metadata), OVERRIDE, region)
    assert event.region == published
    assert home_region(event.region, event.metadata, TOPO) == home


def test_manual_dispatch_of_a_room_livekit_does_not_list() -> None:
    event = manual_event("vip-2", None, OVERRIDE, "us-east")
    assert (event.sid, event.region) == (None, "us-east")
    assert event.metadata == {OVERRIDE_KEY: OVERRIDE.model_dump(exclude_none=True)}
