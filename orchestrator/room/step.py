"""What a decision returns: the next record to write, and at most one effect to perform after it.

The write comes first, so the intent of every side effect is in the record before the effect
happens: a replica that crashes at any line leaves a record the next one resumes from, looking
before it acts (see :mod:`orchestrator.room.reconciler`).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.records import Replaced, RoomRecord
from orchestrator.room.facts import Fact
from orchestrator.scheduler import Decision


@dataclass(frozen=True, slots=True)
class EnsureDispatch:
    """Make sure our attempt's dispatch exists in LiveKit: look for it by its key first (unless
    ``look_first`` is off because the claim was just written), create it otherwise."""

    key: str
    look_first: bool


@dataclass(frozen=True, slots=True)
class RemoveReplaced:
    """Delete the replaced dispatches, evict their agents, and confirm with LiveKit's participant
    list that none is left."""

    entries: tuple[Replaced, ...]


@dataclass(frozen=True, slots=True)
class CheckJobs:
    """Ask LiveKit whether our dispatch got a job (it answers CreateDispatch with 200 even when it
    cannot assign one, and never retries)."""

    dispatch_id: str


Effect = EnsureDispatch | RemoveReplaced | CheckJobs


@dataclass(frozen=True, slots=True)
class Step:
    record: RoomRecord | None = None  # write this (compare-and-set) first; None: nothing to write
    effect: Effect | None = None  # then perform this; its outcome is the next decision's fact
    then: Fact | None = None  # the fact for the next decision when there is no effect (a claim)
    # For observers: the scheduler's decision (the schedule span), the cause of a redispatch.
    decision: Decision | None = None
    cause: str | None = None
    hold: str | None = None  # pool to count the room against before the write lands (the index)


REST = Step()
