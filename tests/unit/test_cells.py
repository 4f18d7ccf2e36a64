"""Per-region state: each region's names, the config that picks them, and where a worker reports."""

from __future__ import annotations

import pytest

from orchestrator.ops.doctor_checks import Facts, check_bucket, check_consumers, check_streams
from shared import bus, subjects
from shared.config import ConfigError, parse_config
from shared.dispatch_metadata import build_dispatch_metadata, read_dispatch_metadata
from shared.messages import DispatchInfo

REGIONS = {"regions": {"eu-central": {}, "us-east": {}}}


def test_the_shared_cell_keeps_the_names_other_backends_publish_on() -> None:
    shared = subjects.SHARED
    assert shared.room_created == "switchboard.rooms.created"
    assert shared.room_status_of("eu-central-a") == "switchboard.rooms.status.eu-central-a"
    assert shared.rooms_stream == "SWITCHBOARD_ROOMS" and shared.rooms_bucket == "switchboard_rooms"
    assert bus.rooms_stream_config(1, shared).placement is None


def test_a_regional_cell_has_its_own_names_none_overlapping_the_shared_streams() -> None:
    us = subjects.Cell("us-east")
    assert us.room_created == "switchboard.region.us-east.rooms.created"
    assert us.room_status_of("us-east-a") == "switchboard.region.us-east.rooms.status.us-east-a"
    assert (us.rooms_stream, us.status_stream, us.dead_letter_stream) == (
        "SWITCHBOARD_ROOMS_us-east",
        "SWITCHBOARD_STATUS_us-east",
        "SWITCHBOARD_DEAD_us-east",
    )
    names = {us.rooms_bucket, us.archive_bucket, us.resync_bucket, us.members_bucket}
    assert names == {
        "switchboard_rooms_us-east",
        "switchboard_rooms_archive_us-east",
        "switchboard_resync_us-east",
        "switchboard_members_us-east",
    }
    config = bus.rooms_stream_config(3, us)
    assert config.placement is not None and config.placement.cluster == "us-east"
    # No subject of a regional stream falls under a shared stream's subjects (one account holds both).
    shared_streams = [bus.rooms_stream_config(), bus.status_stream_config(), bus.dead_letter_stream_config()]
    shared_subjects = {s for c in shared_streams for s in c.subjects or []}
    for stream in (
        bus.rooms_stream_config(1, us),
        bus.status_stream_config(1, us),
        bus.dead_letter_stream_config(1, us),
    ):
        for subject in stream.subjects or []:
            assert not any(_overlaps(subject, s) for s in shared_subjects), (subject, shared_subjects)


def _overlaps(a: str, b: str) -> bool:
    ta, tb = a.split("."), b.split(".")
    for i, (x, y) in enumerate(zip(ta, tb, strict=False)):
        if ">" in (x, y):
            return True
        if x != y and "*" not in (x, y):
            return False
        if i == min(len(ta), len(tb)) - 1:
            return len(ta) == len(tb)
    return False


def test_shared_state_is_the_default_and_ignores_the_region() -> None:
    config = parse_config(REGIONS)
    assert config.state == "shared"
    assert config.cell("us-east") is subjects.SHARED and config.cells(None) == [subjects.SHARED]


def test_per_region_state_needs_a_known_region() -> None:
    config = parse_config({**REGIONS, "state": "per_region"})
    assert config.cell("us-east") == subjects.Cell("us-east")
    with pytest.raises(ConfigError, match="SWITCHBOARD_REGION"):
        config.cell(None)
    with pytest.raises(ConfigError, match="'mars' is not in the config; known: eu-central, us-east"):
        config.cell("mars")
    # Operator commands without a region read every region's rooms.
    assert config.cells(None) == [subjects.Cell("eu-central"), subjects.Cell("us-east")]
    assert config.cells("eu-central") == [subjects.Cell("eu-central")]


def test_an_unknown_state_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="state"):
        parse_config({"state": "everywhere"})


def test_the_dispatch_tells_the_worker_which_region_takes_its_reports() -> None:
    info = DispatchInfo(
        room="r",
        attempt=1,
        pool="eu-central-a",
        region="eu-central",
        agent="a",
        key="r/1",
        state_region="us-east",
    )
    read = read_dispatch_metadata(build_dispatch_metadata('{"user": 1}', info))
    assert read.info is not None and read.info.state_region == "us-east" and not read.problems
    shared = DispatchInfo(room="r", attempt=1, pool="p", region="eu-central", agent="a", key="r/1")
    assert "state_region" not in build_dispatch_metadata(None, shared)  # older workers read it as before


def test_an_operator_command_without_a_region_works_on_the_default_regions_cell() -> None:
    per_region = parse_config({**REGIONS, "default_region": "eu-central", "state": "per_region"})
    assert per_region.cell_or_default(None) == subjects.Cell("eu-central")
    assert per_region.cell_or_default("us-east") == subjects.Cell("us-east")
    assert parse_config(REGIONS).cell_or_default(None) is subjects.SHARED


def test_the_doctor_checks_its_regions_streams_and_bucket() -> None:
    us = subjects.Cell("us-east")
    facts = Facts(nats_url="nats://x", streams={us.rooms_stream: True}, cell=us)
    names = [r.name for r in check_streams(facts)]
    assert names == [
        "stream SWITCHBOARD_ROOMS_us-east",
        "stream SWITCHBOARD_STATUS_us-east",
        "stream SWITCHBOARD_DEAD_us-east",
    ]
    assert [r.ok for r in check_streams(facts)] == [True, False, False]
    assert check_consumers(facts)[0].name == "consumer SWITCHBOARD_ROOMS_us-east/orchestrator"
    assert check_bucket(facts)[0].name == "KV bucket switchboard_rooms_us-east"
