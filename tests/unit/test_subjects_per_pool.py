"""Per-pool subjects: the pool a heartbeat or report speaks for is read from its subject (issue 17),
and a flood of mismatches logs one line per subject and pool a minute."""

from __future__ import annotations

import logging

import pytest

from shared import subjects
from shared.logs import Throttled


@pytest.mark.parametrize(
    ("subject", "family", "pool"),
    [
        ("switchboard.pools.eu-central-a.heartbeat", subjects.POOL_HEARTBEAT_WILDCARD, "eu-central-a"),
        ("switchboard.rooms.status.us-east-a", subjects.ROOM_STATUS_WILDCARD, "us-east-a"),
        ("switchboard.rooms.status", subjects.ROOM_STATUS_WILDCARD, None),  # the older, pool-less one
        ("switchboard.pools.eu-central-a.control", subjects.POOL_HEARTBEAT_WILDCARD, None),
        ("switchboard.rooms.status.a.b", subjects.ROOM_STATUS_WILDCARD, None),
        ("other.pools.eu-central-a.heartbeat", subjects.POOL_HEARTBEAT_WILDCARD, None),
    ],
)
def test_the_pool_of_a_subject(subject: str, family: str, pool: str | None) -> None:
    assert subjects.pool_of(subject, family) == pool


def test_a_report_subject_names_its_pool() -> None:
    assert subjects.room_status("eu-central-a") == "switchboard.rooms.status.eu-central-a"
    with pytest.raises(ValueError, match="pool id"):
        subjects.room_status("eu.central")


def test_a_flood_of_one_mismatch_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.throttled")
    throttled = Throttled(log, every_s=60.0)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        for _ in range(100):
            throttled.warn(("s", "a"), "mismatch %s", "a")
        throttled.warn(("s", "b"), "mismatch %s", "b")
    assert [r.getMessage() for r in caplog.records] == ["mismatch a", "mismatch b"]
