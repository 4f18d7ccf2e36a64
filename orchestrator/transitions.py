"""The room state machine: which transitions are legal, and the one function that makes them.

Pure: no I/O, ``now`` is an argument. Every transition appends a history entry, so the record is
its own audit trail. An illegal transition raises :class:`IllegalTransition` instead of writing.
"""

from __future__ import annotations

from typing import Any

from orchestrator.records import MAX_HISTORY, HistoryEntry, RoomRecord, RoomState

S = RoomState

LEGAL: dict[RoomState, frozenset[RoomState]] = {
    S.RECEIVED: frozenset({S.DISPATCHING, S.WAITING_FOR_POOL, S.IGNORED, S.ENDED, S.FAILED}),
    S.DISPATCHING: frozenset(
        {S.DISPATCHED, S.REDISPATCHING, S.WAITING_FOR_POOL, S.WAITING_FOR_LIVEKIT, S.ENDED, S.FAILED}
    ),
    S.WAITING_FOR_LIVEKIT: frozenset({S.DISPATCHING, S.ENDED, S.FAILED}),
    # A voice report can overtake the joined report; accept it straight into speaking.
    S.DISPATCHED: frozenset({S.JOINED, S.SPEAKING, S.REDISPATCHING, S.ENDED, S.FAILED}),
    S.JOINED: frozenset({S.SPEAKING, S.REDISPATCHING, S.ENDED, S.FAILED}),
    S.SPEAKING: frozenset({S.REDISPATCHING, S.ENDED, S.FAILED}),
    S.REDISPATCHING: frozenset({S.DISPATCHING, S.WAITING_FOR_POOL, S.ENDED, S.FAILED}),
    S.WAITING_FOR_POOL: frozenset({S.DISPATCHING, S.ENDED, S.FAILED}),
    S.IGNORED: frozenset(),
    S.ENDED: frozenset(),
    S.FAILED: frozenset(),
}


class IllegalTransition(ValueError):
    def __init__(self, record: RoomRecord, to: RoomState) -> None:
        super().__init__(
            f"room {record.room!r}: {record.state.value} -> {to.value} is not a legal transition"
        )
        self.from_state = record.state
        self.to_state = to


def transition(
    record: RoomRecord,
    to: RoomState,
    *,
    now: float,
    event: str,
    detail: str = "",
    data: dict[str, Any] | None = None,
    **changes: Any,
) -> RoomRecord:
    """``record`` moved to ``to`` with ``changes`` applied and one history line appended."""
    if to not in LEGAL[record.state]:
        raise IllegalTransition(record, to)
    return note(
        record.model_copy(update={"state": to, **changes}), now=now, event=event, detail=detail, data=data
    )


def note(
    record: RoomRecord, *, now: float, event: str, detail: str = "", data: dict[str, Any] | None = None
) -> RoomRecord:
    """Append a history line without changing state (e.g. a failed dispatch attempt)."""
    entry = HistoryEntry(at=now, event=event, state=record.state, detail=detail, data=data or {})
    history = [*record.history, entry]
    if len(history) > MAX_HISTORY:
        # Keep the first entries (how the room started) and the most recent ones.
        history = history[:10] + history[-(MAX_HISTORY - 10) :]
    return record.model_copy(update={"history": history})
