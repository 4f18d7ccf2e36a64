"""The room record: the one durable truth about a room, kept in the KV bucket.

Every change is a compare-and-set on the entry's revision (see :mod:`orchestrator.store`), so two
replicas can never both act on one room; the record carries everything the next replica needs to
resume (state, attempt, pool, dispatch id, deadline, lease) and the timeline ``explain`` prints.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

MAX_HISTORY = 80


class RoomState(StrEnum):
    RECEIVED = "received"
    IGNORED = "ignored"
    DISPATCHING = "dispatching"
    DISPATCHED = "dispatched"
    JOINED = "joined"
    SPEAKING = "speaking"
    REDISPATCHING = "redispatching"
    WAITING_FOR_POOL = "waiting_for_pool"
    # A round of dispatch tries found LiveKit's API unreachable: retried every livekit_retry_s.
    WAITING_FOR_LIVEKIT = "waiting_for_livekit"
    ENDED = "ended"
    FAILED = "failed"


TERMINAL = frozenset({RoomState.IGNORED, RoomState.ENDED, RoomState.FAILED})
# States in which an agent of ours is (or is about to be) in the room, on ``pool``.
HOLDING = frozenset({RoomState.DISPATCHED, RoomState.JOINED, RoomState.SPEAKING})
# States in which a replica is in the middle of acting; resumed by another when the lease runs out.
IN_FLIGHT = frozenset({RoomState.RECEIVED, RoomState.DISPATCHING, RoomState.REDISPATCHING})


# Unknown fields are ignored, never refused: a record written by a newer build must stay readable
# by an older one (a rollback), or one record would stop every replica that reads it.
_RECORD_CONFIG = ConfigDict(extra="ignore", frozen=True)


class HistoryEntry(BaseModel):
    """One line of a room's timeline."""

    model_config = _RECORD_CONFIG

    at: float  # unix seconds
    event: str  # received, rule, decision, dispatch, dispatch_error, joined, voice, redispatch, ...
    state: RoomState
    detail: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class Replaced(BaseModel):
    """A dispatch this room no longer wants, remembered so its agent is removed whenever it shows up:
    a late ``joined`` from it (in any state) re-opens the removal. ``removed``: LiveKit's participant
    list confirmed none of ``identities`` is in the room (or the room is gone)."""

    model_config = _RECORD_CONFIG

    dispatch_id: str | None = None
    # The attempt's key and agent name: a dispatch whose CreateDispatch answer was never seen is
    # found by them (LiveKit's list of the room's dispatches).
    key: str | None = None
    agent_name: str | None = None
    attempt: int = 0
    # The sid of the room it was dispatched for: found in a newer room of the name, it made that room.
    sid: str | None = None
    identities: list[str] = Field(default_factory=list)
    removed: bool = False
    # Bumped each time a report re-opens the removal: a removal confirms only the opening it
    # started from, so one that began before the agent joined never settles the later one.
    opened: int = 0

    def same(self, other: Replaced) -> bool:
        """One dispatch: the same id, or the same attempt key when an id is missing."""
        if self.dispatch_id and other.dispatch_id:
            return self.dispatch_id == other.dispatch_id
        return self.key is not None and self.key == other.key


MAX_REPLACED = 8


class RoomRecord(BaseModel):
    model_config = _RECORD_CONFIG

    v: int = 1
    room: str
    sid: str | None = None
    state: RoomState = RoomState.RECEIVED
    rule: str | None = None
    agent: str | None = None
    home_region: str | None = None
    # User metadata from the room event, passed to every dispatch (never logged).
    user_metadata: str | None = None
    attempt: int = 0
    pool: str | None = None
    agent_name: str | None = None
    dispatch_id: str | None = None
    dispatch_key: str | None = None
    identity: str | None = None  # the agent participant's identity once joined
    worker: str | None = None  # the worker running the agent, from its reports: its death moves the room
    # A manual `switchboard dispatch`: agent instead of the rule's; pool for the first placement.
    override_agent: str | None = None
    override_pool: str | None = None
    manual: bool = False
    # When LiveKit was asked whether our dispatch got a job (see Controller._check_assignment).
    assign_checked_at: float | None = None
    excluded: list[str] = Field(default_factory=list)
    # Dispatches replaced by a later attempt (or by the room's end); the newest last.
    replaced: list[Replaced] = Field(default_factory=list)
    reason: str | None = None  # why failed / ignored / last redispatch
    # Unix seconds. ``deadline`` is the next timer (join, voice, waiting for a pool); ``lease_until``
    # guards an in-flight action by ``owner`` — past it, another replica takes over.
    received_at: float = 0.0
    event_at: float | None = None  # the room's creation time, as its event said
    # How Switchboard learnt of the room: its event, or the resync finding it in LiveKit's room list.
    origin: str = "event"
    # When the room started waiting for LiveKit's API (state waiting_for_livekit), for its deadline.
    waiting_since: float | None = None
    # A LiveKit room of this name that our own CreateDispatch created (its call raced the room's
    # deletion): never served, so an empty ghost room does not cycle agents.
    ghost_sid: str | None = None
    dispatched_at: float | None = None
    joined_at: float | None = None
    voice_at: float | None = None
    deadline: float | None = None
    owner: str | None = None
    lease_until: float | None = None
    # W3C context of the room's trace, so every later span (timers, redispatch) joins the one trace.
    traceparent: str | None = None
    tracestate: str | None = None
    history: Annotated[list[HistoryEntry], Field(max_length=MAX_HISTORY)] = Field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def removal_pending(self) -> bool:
        """An agent we no longer want may still be in the room: remove it before anything else."""
        return any(not r.removed for r in self.replaced)

    def compacted(self) -> RoomRecord:
        """What the rooms bucket keeps of an ended room (its full form is archived): every field,
        and the history from the entry that ended it on (what ``ended_at`` and later notes need)."""
        first = next((i for i, h in enumerate(self.history) if h.state in TERMINAL), None)
        if first is None or first == 0:
            return self
        return self.model_copy(update={"history": self.history[first:]})

    @property
    def ended_at(self) -> float | None:
        """When the record became terminal (later notes, such as a removal's, do not count)."""
        if not self.terminal:
            return None
        return next((h.at for h in self.history if h.state in TERMINAL), self.received_at)

    @property
    def trace_id(self) -> str | None:
        return (
            self.traceparent.split("-")[1] if self.traceparent and self.traceparent.count("-") >= 3 else None
        )


class RoomView(Protocol):
    """What timers, reservations and the resync read of a room: a full :class:`RoomRecord`, or the
    compact entry the room index keeps of it (:class:`orchestrator.index.RoomEntry`)."""

    @property
    def room(self) -> str: ...
    @property
    def sid(self) -> str | None: ...
    @property
    def ghost_sid(self) -> str | None: ...
    @property
    def state(self) -> RoomState: ...
    @property
    def pool(self) -> str | None: ...
    @property
    def dispatch_id(self) -> str | None: ...
    @property
    def worker(self) -> str | None: ...
    @property
    def identity(self) -> str | None: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def lease_until(self) -> float | None: ...
    @property
    def deadline(self) -> float | None: ...
    @property
    def dispatched_at(self) -> float | None: ...
    @property
    def assign_checked_at(self) -> float | None: ...
    @property
    def joined_at(self) -> float | None: ...
    @property
    def voice_at(self) -> float | None: ...
    @property
    def received_at(self) -> float: ...
    @property
    def event_at(self) -> float | None: ...
    @property
    def terminal(self) -> bool: ...
    @property
    def removal_pending(self) -> bool: ...
    @property
    def ended_at(self) -> float | None: ...
    @property
    def reason(self) -> str | None: ...
