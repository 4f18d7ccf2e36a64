"""What a decision is made from: the facts that reach a room, as plain data.

A fact is either an input from outside (a room event, an agent's report, the sweep noticing a
timer) or the outcome of an effect this replica just performed (a CreateDispatch that landed, a
removal LiveKit confirmed). Decisions (:mod:`orchestrator.room.decide`) read them; only the
effects executor (:mod:`orchestrator.room.effects`) and the reconciler make them.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.records import Replaced
from orchestrator.scheduler import PoolView
from shared.messages import AgentStatus, RoomEnded


@dataclass(frozen=True, slots=True)
class Claimed:
    """This very reconcile call just wrote the claim for ``key``: no CreateDispatch for it was ever
    sent, so the dispatch step may create without looking first. Every other path looks first."""

    key: str


@dataclass(frozen=True, slots=True)
class Report:
    status: AgentStatus
    # The reporting worker's last beat said it was draining: a ``left`` is then its drain grace
    # ending (cause ``drain``, counted apart from agents that left on their own).
    draining: bool = False


@dataclass(frozen=True, slots=True)
class Ended:
    event: RoomEnded
    published_at: float | None = None  # unix seconds, JetStream's stamp on the end's message


@dataclass(frozen=True, slots=True)
class DispatchLanded:
    key: str
    dispatch_id: str
    tries: int
    found: bool  # an earlier (ambiguous) try, or a previous owner, had created it
    room_sid: str | None = None  # the sid LiveKit listed the room under just before


@dataclass(frozen=True, slots=True)
class RoomGone:
    """LiveKit has no room of the record's name, or only a newer incarnation (``sid``): nothing to
    dispatch into; CreateDispatch would create the room."""

    key: str
    sid: str | None
    # LiveKit lists this attempt's dispatch in the room now listed under ``sid``: an earlier try
    # landed after the room was deleted, and created that room.
    after_ambiguous: bool = False


@dataclass(frozen=True, slots=True)
class Vanished:
    """The resync: LiveKit no longer lists the record's room (or lists it under another sid)."""

    sid: str | None
    listed_at: float  # when ListRooms was asked: a record made after that may not be listed yet


@dataclass(frozen=True, slots=True)
class AgentLost:
    """The resync: the room's agent is not among its participants and no heartbeat lists its job."""

    identity: str | None
    listed_at: float


@dataclass(frozen=True, slots=True)
class DispatchFailed:
    key: str
    reason: str
    message: str
    permanent: bool
    tries: int


@dataclass(frozen=True, slots=True)
class RemovalDone:
    """LiveKit confirmed none of the replaced agents is in the room (or that the room is gone)."""

    room_exists: bool
    # The entries as the effect found them: ids looked up by key, identities learned from jobs.
    entries: tuple[Replaced, ...] = ()
    # Identities a report named that were not removed: not an agent of the dispatch's pool.
    refused: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GhostFound:
    """A removal found a replaced dispatch of an older room of this name (``entry``) in the room
    LiveKit lists now (``sid``), with nobody but agents there: our CreateDispatch, landing after
    that room was deleted, made this one (LiveKit creates a missing room for a dispatch). Reported
    before anything is deleted: that dispatch is the only evidence, and it must be recorded first."""

    entry: Replaced
    sid: str


@dataclass(frozen=True, slots=True)
class RemovalFailed:
    reason: str
    message: str


# RemovalFailed.reason when LiveKit listed the room's participants (its Redis knows the room) but
# a call that must reach the node hosting the room answered "unavailable": that node may be gone.
ROOM_NODE_SILENT = "room_node_silent"


@dataclass(frozen=True, slots=True)
class JobsSeen:
    dispatch_id: str
    jobs: int | None  # None: LiveKit does not list the dispatch


@dataclass(frozen=True, slots=True)
class JobsUnknown:
    dispatch_id: str
    message: str


@dataclass(frozen=True, slots=True)
class PlaceInput:
    """What placement needs from the replica's memory: the pools as its registry sees them and the
    rooms already counted against each pool."""

    pools: list[PoolView]
    reserved: dict[str, int]
    seed: int


Outcome = (
    DispatchLanded
    | DispatchFailed
    | RoomGone
    | RemovalDone
    | RemovalFailed
    | GhostFound
    | JobsSeen
    | JobsUnknown
)
Fact = Claimed | Report | Ended | Vanished | AgentLost | Outcome
