"""The live-rooms benchmark's arithmetic: censored latencies, ratios, per-room figures, the copies."""

from __future__ import annotations

import pytest

from bench.footprint import TEMPLATE
from bench.liverooms import (
    latency_stats,
    live_dispatch_id,
    live_room,
    live_worker,
    per_room,
    ratio,
    render_copy,
    rooms_in_metrics,
)
from orchestrator.records import HistoryEntry, RoomRecord, RoomState

MS = 1_000_000  # ns


def test_latency_over_dispatched_events_only_when_all_arrived() -> None:
    t0 = {f"r{i}": i * 10 * MS for i in range(100)}
    arrivals = {k: t + (i + 1) * MS for i, (k, t) in enumerate(t0.items())}  # 1..100 ms
    s = latency_stats(t0, arrivals, until_ns=10**12)
    assert s["events"] == s["dispatched"] == 100 and s["censored"] == 0
    assert not s["lower_bound"]
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["max_ms"] == pytest.approx(100.0)
    assert s["p99_ms_dispatched"] == s["p99_ms"]


def test_undispatched_events_count_at_the_time_they_waited_and_mark_a_lower_bound() -> None:
    t0 = {"a": 0, "b": 0, "c": 0, "d": 1000 * MS}
    arrivals = {"a": 5 * MS, "b": 5 * MS}
    s = latency_stats(t0, arrivals, until_ns=3000 * MS)
    assert s["dispatched"] == 2 and s["censored"] == 2 and s["lower_bound"]
    assert s["max_ms"] == pytest.approx(3000.0)  # "c" waited 3 s and was still waiting
    assert s["p50_ms"] == pytest.approx((5 + 2000) / 2)  # 5, 5, 2000 (d), 3000 (c)
    assert s["p50_ms_dispatched"] == pytest.approx(5.0)


def test_no_events() -> None:
    s = latency_stats({}, {}, until_ns=0)
    assert s["events"] == 0 and s["p99_ms"] is None and s["max_ms"] is None


def test_ratio_and_per_room_refuse_what_cannot_be_divided() -> None:
    assert ratio(12.0, 10.0) == pytest.approx(1.2)
    assert ratio(None, 10.0) is None and ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None and ratio(float("inf"), 1.0) is None
    assert per_room(2000.0, 1000) == pytest.approx(2.0)
    assert per_room(1.0, 0) is None and per_room(None, 5) is None


def test_a_copy_has_its_own_room_dispatch_identity_and_listing_worker() -> None:
    rec = RoomRecord(
        room=TEMPLATE,
        state=RoomState.SPEAKING,
        pool="eu-central-a",
        dispatch_id="AD_bench000000007",
        dispatch_key=f"{TEMPLATE}/1",
        identity="agent-AJ_bench0001",
        worker="eu-central-a-w1",
        history=[
            HistoryEntry(
                at=1.0, event="dispatch", state=RoomState.DISPATCHED, data={"id": "AD_bench000000007"}
            )
        ],
    )
    copy = RoomRecord.model_validate_json(render_copy(rec.model_dump_json(), rec, 1234))
    assert copy.room == live_room(1234) == "fp-0001234"
    assert copy.dispatch_key == "fp-0001234/1"
    assert copy.dispatch_id == live_dispatch_id(1234)
    assert copy.history[0].data == {"id": live_dispatch_id(1234)}
    assert copy.identity == "agent-AJ_live000001234"
    assert copy.worker == live_worker(1234) == "eu-central-a-live001"
    assert live_worker(999) == "eu-central-a-live000" and live_worker(1000) == "eu-central-a-live001"
    assert copy.state == RoomState.SPEAKING and copy.pool == "eu-central-a"


def test_rooms_in_metrics_sums_the_live_rooms_gauge() -> None:
    text = "\n".join(
        [
            "# HELP switchboard_rooms_live Live rooms by state",
            "# TYPE switchboard_rooms_live gauge",
            'switchboard_rooms_live{switchboard_state="speaking"} 100000.0',
            'switchboard_rooms_live{switchboard_state="dispatched"} 3.0',
            "switchboard_other 7.0",
        ]
    )
    assert rooms_in_metrics(text) == 100_003
    assert rooms_in_metrics("switchboard_other 1.0") is None
