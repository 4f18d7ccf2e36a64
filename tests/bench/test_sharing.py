"""The sharing benchmark's arithmetic: shares against 1/3, takeover times, the dispatch audit."""

from __future__ import annotations

import re

import pytest

from bench.footprint import TEMPLATE
from bench.liverooms import live_room
from bench.sharing import (
    count_dispatched,
    dispatch_audit,
    goals,
    last_match,
    live_index,
    log_problems,
    per_room_kb,
    reached,
    replica_pid,
    rooms_by_state,
    share_stats,
    slow_consumers,
    terminal_template,
)
from orchestrator.records import HistoryEntry, RoomRecord, RoomState
from orchestrator.store import at_rest

METRICS = "\n".join(
    [
        "# HELP switchboard_rooms_live Live rooms by state",
        "# TYPE switchboard_rooms_live gauge",
        'switchboard_rooms_live{otel_scope_name="sb",switchboard_state="speaking"} 9412.0',
        'switchboard_rooms_live{otel_scope_name="sb",switchboard_state="dispatched"} 7.0',
        'switchboard_rooms_live{otel_scope_name="sb",switchboard_state="received"} 0.0',
        'switchboard_pool_load{switchboard_pool="eu-central-a"} 0.5',
    ]
)


def test_rooms_by_state_reads_each_state_of_the_gauge() -> None:
    assert rooms_by_state(METRICS) == {"speaking": 9412, "dispatched": 7, "received": 0}


def test_rooms_by_state_is_none_without_the_gauge() -> None:
    assert rooms_by_state('switchboard_pool_load{switchboard_pool="a"} 1.0\n') is None
    assert rooms_by_state("") is None


def test_share_stats_against_an_equal_share() -> None:
    s = share_stats({"a": 11_000, "b": 10_000, "c": 9_000}, 30_000)
    assert s["total"] == 30_000 and s["sum"] == 30_000
    assert s["replicas"]["a"]["share"] == pytest.approx(11 / 30)
    assert s["replicas"]["a"]["deviation"] == pytest.approx(0.10)
    assert s["replicas"]["b"]["deviation"] == pytest.approx(0.0)
    assert s["replicas"]["c"]["deviation"] == pytest.approx(-0.10)
    assert s["max_abs_deviation"] == pytest.approx(0.10)


def test_share_stats_takes_the_sum_by_default_and_shows_a_shortfall_against_a_total() -> None:
    assert share_stats({"a": 5, "b": 5})["max_abs_deviation"] == pytest.approx(0.0)
    short = share_stats({"a": 5, "b": 5}, 20)  # half the rooms tracked by nobody
    assert short["sum"] == 10 and short["max_abs_deviation"] == pytest.approx(0.5)


def test_share_stats_without_rooms_has_no_deviation() -> None:
    s = share_stats({"a": 0, "b": 0, "c": 0})
    assert s["max_abs_deviation"] is None
    assert s["replicas"]["a"]["share"] is None


def test_reached_is_the_first_sample_at_or_over_the_target() -> None:
    samples = [(0.0, 20_000), (0.1, None), (2.2, 19_000), (2.3, 30_000), (2.4, 30_000)]
    assert reached(samples, 30_000) == pytest.approx(2.3)
    assert reached(samples, 40_000) is None
    assert reached([], 1) is None


def test_live_index_reads_copies_names_only() -> None:
    assert live_index(live_room(42)) == 42
    assert live_index(live_room(5_000_123)) == 5_000_123
    assert live_index("fp-sh30000k-12") is None
    assert live_index("fp-template") is None


def _rec(state: str, events: list[str], attempt: int = 1) -> dict[str, object]:
    return {"state": state, "attempt": attempt, "history": [{"event": e} for e in events]}


def test_count_dispatched_counts_history_entries() -> None:
    assert count_dispatched(_rec("dispatched", ["received", "decision", "dispatched"])) == 1
    assert count_dispatched(_rec("dispatched", ["dispatched", "resume", "dispatched"])) == 2
    assert count_dispatched({}) == 0


def test_audit_all_once() -> None:
    rooms = ["n0", "n1"]
    a = dispatch_audit(
        rooms,
        {"n0": 1, "n1": 2},
        {"n0": {"AD_1"}, "n1": {"AD_2"}},
        {"n0": _rec("dispatched", ["dispatched"]), "n1": _rec("dispatched", ["dispatched"])},
        creates=2,
    )
    assert a["exactly_once"] and a["lost"] == a["doubled"] == a["no_record"] == 0
    assert a["extra_create_dispatch"] == 0 and a["dispatched"] == 2


def test_audit_finds_lost_doubled_and_extra_calls() -> None:
    rooms = ["n0", "n1", "n2", "n3"]
    a = dispatch_audit(
        rooms,
        {"n0": 1, "n1": 2, "n3": 3},  # n2 never got a CreateDispatch
        {"n0": {"AD_1", "AD_9"}, "n1": {"AD_2"}},  # n0 carried two dispatch ids
        {
            "n0": _rec("dispatched", ["dispatched", "resume", "dispatched"]),
            "n1": _rec("dispatched", ["dispatched"], attempt=2),
            "n2": _rec("received", []),
            "n3": None,
        },
        creates=5,
    )
    assert not a["exactly_once"]
    assert a["lost"] == 1 and a["lost_rooms"] == ["n2"]
    assert a["no_record"] == 1
    assert a["not_dispatched"] == 1 and a["not_dispatched_rooms"] == {"n2": "received"}
    assert a["doubled"] == 2
    assert a["doubled_rooms"]["n0"] == "2 dispatch ids, 2 dispatched entries"
    assert a["doubled_rooms"]["n1"] == "attempt 2"
    assert a["extra_create_dispatch"] == 2  # 5 calls for 3 rooms that got one


def test_audit_with_unknown_call_count() -> None:
    a = dispatch_audit(["n0"], {"n0": 1}, {}, {"n0": _rec("dispatched", ["dispatched"])}, creates=None)
    assert a["exactly_once"] and a["extra_create_dispatch"] is None


def test_terminal_template_is_an_ended_record_the_index_drops() -> None:
    rec = RoomRecord(
        room=TEMPLATE,
        state=RoomState.SPEAKING,
        pool="eu-central-a",
        dispatch_id="AD_x",
        owner="replica-1",
        lease_until=99.0,
        history=[HistoryEntry(at=1.0, event="voice", state=RoomState.SPEAKING)],
    )
    ended = terminal_template(rec, now=123.0)
    assert ended.state is RoomState.ENDED and ended.terminal and not ended.removal_pending
    assert ended.ended_at == 123.0 and ended.owner is None and ended.lease_until is None
    assert [h.event for h in ended.history] == ["ended"]  # compacted, as a room that ends leaves it
    assert at_rest(ended.model_dump_json().encode())  # what a partition's watch skips unparsed
    assert RoomRecord.model_validate_json(ended.model_dump_json()) == ended


def test_last_match_and_log_problems() -> None:
    log = "\n".join(
        [
            "2026-12-02 18:00:00,001 INFO    orchestrator.ownership: tracking 11 of the rooms' partitions",
            "2026-12-02 18:00:01,001 WARNING orchestrator.partition_watch: watch of partition 3 failed",
            "2026-12-02 18:00:02,001 INFO    orchestrator.ownership: tracking 16 of the rooms' partitions",
            "2026-12-02 18:00:03,001 ERROR   orchestrator.service: boom",
            "Traceback (most recent call last): WARNING in the text",
        ]
    )
    assert last_match(re.compile(r"tracking (\d+) of the rooms' partitions"), log) == (16,)
    assert last_match(re.compile(r"(\d+) live rooms in (\d+)"), "x 5 live rooms in 32 y") == (5, 32)
    assert last_match(re.compile(r"nothing (\d+)"), log) is None
    problems = log_problems(log)
    assert problems is not None and problems["count"] == 2
    assert "watch of partition 3 failed" in problems["first"][0]
    assert log_problems("2026-12-02 18:00:00,001 INFO    x: fine") is None


def test_per_room_kb() -> None:
    assert per_room_kb(130_000, 100_000, 20_000) == pytest.approx(1.5)
    assert per_room_kb(None, 100_000, 1) is None
    assert per_room_kb(1, 0, 0) is None


def _row(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "live_rooms": 30_000,
        "three": {"max_abs_deviation": 0.06, "rss_kb_per_room_max": 1.4},
        "kill": {"takeover_s": 2.5, "exactly_once": True},
        "join": {"takeover_s": 3.1, "exactly_once": True},
        "term": {"takeover_s": 0.1, "exactly_once": True},
        "moved_writes": 0,
        "final_speaking": 30_000,
        "terminal_replayed": True,
    }
    row.update(over)
    return row


def test_goals_by_part() -> None:
    g = goals([_row()])
    assert g == {"share": True, "takeover": True, "exactly_once": True, "memory": True, "terminal": False}
    late = goals([_row(kill={"takeover_s": 3.4, "exactly_once": True})])
    assert late["takeover"] is False
    never = goals([_row(kill={"takeover_s": None, "exactly_once": True})])
    assert never["takeover"] is False
    doubled_on_join = goals([_row(join={"takeover_s": 3.1, "exactly_once": False})])
    assert doubled_on_join["exactly_once"] is False
    moved = goals([_row(moved_writes=3)])
    assert moved["exactly_once"] is False
    unknown = goals([_row(terminal_replayed=None)])
    assert unknown["terminal"] is None


def test_goals_without_measurements() -> None:
    assert set(goals([{"live_rooms": 30_000, "error": "x"}]).values()) == {None}
    assert set(goals([]).values()) == {None}


def test_goals_count_what_a_size_that_stopped_early_measured() -> None:
    partial = {
        "live_rooms": 100_000,
        "error": "OutOfBudget",
        "three": {"max_abs_deviation": 0.2, "rss_kb_per_room_max": 1.1},
        "kill": {"takeover_s": 4.7, "exactly_once": True},
    }
    g = goals([_row(), partial])
    assert g["share"] is False and g["takeover"] is False and g["memory"] is True
    assert g["exactly_once"] is True  # only the complete size audited both takeovers
    assert g["terminal"] is False


NATS_LOG = "\n".join(
    [
        "[17876] 2026/12/02 19:52:58.100000 [INF] Server is ready",
        '[17876] 2026/12/02 19:53:00.513965 [INF] 127.0.0.1:33854 - cid:170 - "v2.16.0:python3:'
        'switchboard-orchestrator-vm-17907-9a1984" - Slow Consumer Detected: MaxPending of 67108864 Exceeded',
        '[17876] 2026/12/02 19:53:04.128567 [INF] 127.0.0.1:54166 - cid:241 - "v2.16.0:python3:'
        'switchboard-orchestrator-my-host-1-20001-abcdef" - Slow Consumer Detected: MaxPending of 67108864 '
        "Exceeded",
        '[17876] 2026/12/02 19:53:05.000000 [WRN] 127.0.0.1:42570 - cid:5 - "v2.16.0:python3:bench" - '
        "Producer was stalled for a total of 7ms - Account:$G",
    ]
)


def test_slow_consumers_names_the_replica_and_the_time() -> None:
    found = slow_consumers(NATS_LOG)
    assert [r for _, r in found] == ["vm-17907-9a1984", "my-host-1-20001-abcdef"]
    assert found[1][0] - found[0][0] == pytest.approx(3.614602)
    assert slow_consumers("") == []


def test_replica_pid() -> None:
    assert replica_pid("vm-17907-9a1984") == 17907
    assert replica_pid("my-host-1-20001-abcdef") == 20001
    assert replica_pid("orchestrator") is None
