"""The phases of a recovery, read from a room's timeline (drill kill-pool and the bench)."""

from __future__ import annotations

from orchestrator.ops.recovery import phase_durations, recovery_marks
from orchestrator.records import HistoryEntry, RoomRecord, RoomState

S = RoomState
KILL = 1_000.0


def recovered() -> RoomRecord:
    def h(at: float, event: str, state: RoomState, **data: object) -> HistoryEntry:
        return HistoryEntry(at=KILL + at, event=event, state=state, data=data)

    return RoomRecord(
        room="room-a",
        state=S.SPEAKING,
        attempt=2,
        pool="us-a",
        dispatched_at=KILL + 1.9,
        joined_at=KILL + 2.6,
        voice_at=KILL + 3.1,
        history=[
            h(-5.0, "joined", S.JOINED, started_at=KILL - 6.0),  # the first attempt's: before the kill
            h(1.7, "redispatch", S.REDISPATCHING),
            h(1.85, "removed", S.REDISPATCHING),
            h(1.9, "dispatched", S.DISPATCHED),
            h(2.6, "joined", S.JOINED, started_at=KILL + 2.2, connected_at=KILL + 2.5),
            h(3.1, "voice", S.SPEAKING),
        ],
    )


def test_each_phase_is_the_time_since_the_mark_before() -> None:
    marks = recovery_marks(recovered(), KILL)
    phases = dict(phase_durations(marks))
    expected = {
        "detect + decide": 1.7,
        "old agent removed": 0.15,
        "CreateDispatch": 0.05,
        "job assigned": 0.3,
        "room connect": 0.3,
        "joined report": 0.1,
        "first audio": 0.5,
    }
    assert phases.keys() == expected.keys()
    for phase, seconds in expected.items():
        assert abs((phases[phase] or 0.0) - seconds) < 1e-6, phase


def test_a_mark_not_reached_is_none_and_the_next_counts_from_the_last_known() -> None:
    rec = recovered().model_copy(update={"voice_at": None})
    rec.history[2] = rec.history[2].model_copy(update={"event": "other"})  # no removal recorded
    phases = dict(phase_durations(recovery_marks(rec, KILL)))
    assert phases["old agent removed"] is None
    assert abs((phases["CreateDispatch"] or 0.0) - 0.2) < 1e-6
    assert phases["first audio"] is None
