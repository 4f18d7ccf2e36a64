"""Pydantic models of every message on the wire — one model per message, strict, versioned.

Every model carries ``v`` (the schema version). Producers and consumers go through
:mod:`shared.codec`, never through ``model_validate_json`` directly, so size caps, version
checks and error wording are the same everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)

# LiveKit room names are free-form but bounded; keep ours printable and short enough for a KV key.
RoomName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
PoolId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]
REGION_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
Region = Annotated[str, StringConstraints(pattern=REGION_PATTERN)]
Reason = Annotated[str, StringConstraints(max_length=1024)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of every wire message: strict types, unknown fields refused, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    # Versions this build can read; a message with another ``v`` is refused before validation.
    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1})


class RoomCreated(Message):
    """A LiveKit room exists and may need an agent. Subject ``switchboard.rooms.created``.

    Published to JetStream with header ``Nats-Msg-Id`` = :meth:`dedupe_id` so a repeated
    webhook or a retried publish is stored once.
    """

    v: Literal[1] = 1
    room: RoomName
    sid: Identifier | None = None
    region: Region | None = None
    metadata: dict[str, JsonValue] | None = None
    created_at: AwareDatetime | None = None

    def dedupe_id(self) -> str:
        """The room's sid; without one, the name and creation time (so a reused name is a new
        message); with neither, the name alone (then JetStream's 600 s duplicate window drops a
        reused name's second event: producers without a sid should send ``created_at``)."""
        if self.sid:
            return self.sid
        if self.created_at is not None:
            return f"{self.room}@{self.created_at.isoformat()}"
        return self.room


class RoomEnded(Message):
    """The room is gone; stop watching it. Subject ``switchboard.rooms.ended``."""

    v: Literal[1] = 1
    room: RoomName
    sid: Identifier | None = None

    def dedupe_id(self) -> str:
        return f"ended:{self.sid or self.room}"


JobId = Annotated[str, StringConstraints(max_length=64)]
JobIds = Annotated[list[JobId], Field(max_length=1000)]


class JobsDelta(BaseModel):
    """What changed in a worker's job list since its beat ``base`` (that beat's ``seq``, same
    ``jobs_epoch``): see :class:`PoolHeartbeat`."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    base: Annotated[int, Field(ge=0)]
    added: JobIds = Field(default_factory=list)
    removed: JobIds = Field(default_factory=list)


class PoolHeartbeat(Message):
    """One worker process's view of itself, about once a second on core NATS.

    Subject ``switchboard.pools.<pool>.heartbeat``. The orchestrator aggregates the workers of a
    pool into the pool's capacity and load.
    """

    v: Literal[1] = 1
    pool: PoolId
    agent: Identifier
    region: Region
    agent_name: Identifier
    worker: Identifier
    capacity: Annotated[int, Field(ge=0, le=100_000)]
    active: Annotated[int, Field(ge=0, le=100_000)]
    load: Annotated[float, Field(ge=0.0, le=1.0)]
    draining: bool = False
    version: Annotated[str, StringConstraints(max_length=64)]
    seq: Annotated[int, Field(ge=0)] = 0
    at: AwareDatetime
    # Which NATS reports are stuck in the worker's buffer (NATS was unreachable).
    pending_reports: Annotated[int, Field(ge=0)] = 0
    # Dispatch ids of the jobs this worker runs now: the orchestrator releases a pool reservation
    # once a heartbeat lists the dispatch it made (so a burst between beats does not herd).
    jobs: JobIds = Field(default_factory=list)
    # A worker with many jobs (see shared/heartbeat_jobs.py) sends its whole list now and then,
    # naming it with ``jobs_epoch`` (new at each start), and in between only what changed
    # (``jobs_delta``, against its beat of that epoch whose ``seq`` is ``base``; ``jobs`` then
    # empty), so a beat's size follows the churn, not the jobs. Lists of up to 32 jobs always go
    # whole, without these fields (the beat a build before them sends and reads).
    jobs_epoch: Annotated[str, StringConstraints(min_length=1, max_length=32)] | None = None
    jobs_delta: JobsDelta | None = None

    @model_validator(mode="after")
    def _delta_names_its_list(self) -> PoolHeartbeat:
        if self.jobs_delta is not None and (self.jobs_epoch is None or self.jobs):
            raise ValueError("jobs_delta needs jobs_epoch, and an empty jobs list")
        return self


class PoolSummary(BaseModel):
    """One pool as an orchestrator replica judges it (liveness on its hearing clock); a part of
    :class:`PoolCensusReply`."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    pool: PoolId
    agent: Identifier
    region: Region
    agent_name: Identifier
    workers: Annotated[int, Field(ge=0)]
    capacity: Annotated[int, Field(ge=0)]
    active: Annotated[int, Field(ge=0)]
    load: Annotated[float, Field(ge=0.0)]
    draining: bool
    liveness: Literal["alive", "draining", "dead"]
    age_s: float | None = None  # seconds since any worker of the pool beat; None: never heard
    open_slots: Annotated[int, Field(ge=0)] | None = None


class PoolCensusReply(Message):
    """The pools as one orchestrator replica sees them: its answer on ``switchboard.orchestrator.pools``
    (core NATS request/reply; one replica of the queue group answers). Lets ``switchboard status``
    show the pools at once instead of listening to heartbeats for a window."""

    v: Literal[1] = 1
    replica: Identifier
    pools: Annotated[list[PoolSummary], Field(max_length=10_000)]


class ReservationsReport(Message):
    """One orchestrator replica's rooms in flight (placed on a pool whose beats do not list their
    job yet), per pool, over the partitions it tracks. Subject
    ``switchboard.orchestrator.reservations`` (core NATS), sent when they change and every
    second. Every replica adds the others' to its own before placing a room, so a burst spread
    over replicas does not herd onto one pool.

    ``applied``: per partition (its number, as a string), the KV revision up to which the counts
    include that partition's records — the sender of a write can then stop counting the room
    itself."""

    v: Literal[1] = 1
    replica: Identifier
    reserved: Annotated[dict[PoolId, Annotated[int, Field(ge=0)]], Field(max_length=10_000)]
    applied: Annotated[dict[Annotated[str, StringConstraints(max_length=4)], int], Field(max_length=1024)]


AgentState = Literal["joined", "voice", "left", "error"]


class AgentStatus(Message):
    """What a worker saw its agent do in a room. Subject ``switchboard.rooms.status`` (JetStream).

    ``joined``: the agent is connected to the room. ``voice``: its audio track is subscribed by a
    remote participant and non-silent frames flow. ``left``: it left (``reason`` says why).
    ``error``: the job failed (``reason``).
    """

    v: Literal[1] = 1
    room: RoomName
    dispatch_id: Annotated[str, StringConstraints(max_length=128)]
    attempt: Annotated[int, Field(ge=0, le=1000)]
    pool: PoolId
    worker: Identifier
    state: AgentState
    at: AwareDatetime
    identity: Annotated[str, StringConstraints(max_length=256)] | None = None
    reason: Reason | None = None
    # Problems the worker noticed but survived, e.g. dispatch metadata that was not JSON.
    warnings: Annotated[list[Reason], Field(max_length=16)] = Field(default_factory=list)
    # ``joined`` only, on the worker's clock: when the job began on the worker (LiveKit assigned it
    # and the worker launched it) and when its room connect finished. The room's timeline keeps
    # them, so a failover's phases can be told apart (issue 16). Older orchestrators refuse these
    # fields: upgrade orchestrators before workers, as for every change to the reports.
    started_at: AwareDatetime | None = None
    connected_at: AwareDatetime | None = None

    def dedupe_id(self) -> str:
        return f"{self.dispatch_id}:{self.state}:{self.worker}"


class DispatchInfo(Message):
    """Our part of a LiveKit dispatch's metadata (under ``_switchboard``, see shared.dispatch_metadata).

    ``key`` marks the attempt (``<room>/<sid>/<attempt>``, ``<room>/<attempt>`` for a room known
    without a sid): after an ambiguous CreateDispatch failure the orchestrator looks for it in
    ``list_dispatch`` before dispatching again. ``sid`` is the room (incarnation) the dispatch is
    for: CreateDispatch creates a room it does not find, so a dispatch landing after its room was
    deleted sits in a room made for it, and a worker given a job in a room of another sid refuses it.
    """

    v: Literal[1] = 1
    room: RoomName
    attempt: Annotated[int, Field(ge=1, le=1000)]
    pool: PoolId
    region: Region
    agent: Identifier
    key: Annotated[str, StringConstraints(max_length=300)]
    sid: Identifier | None = None
    # With per-region state (``state: per_region``): the region whose streams hold the room, so the
    # worker reports to that region's status subject wherever the worker runs. Absent: the shared cell.
    state_region: Region | None = None
    traceparent: Annotated[str, StringConstraints(max_length=128)] | None = None
    tracestate: Annotated[str, StringConstraints(max_length=512)] | None = None
