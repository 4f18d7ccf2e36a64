"""The operator's file, ``switchboard.yaml``: rules, regions, pinned pools and timings.

Validated strictly at start: unknown fields, bad globs and unknown regions are errors that say
where they are (see :func:`load_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.codec import describe_validation_error
from shared.messages import Identifier, PoolId, Region
from shared.subjects import SHARED, Cell


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    """Rooms whose name matches ``match`` (a shell glob) get agent ``agent``; highest priority wins."""

    name: Identifier
    match: Annotated[str, Field(min_length=1, max_length=256)]
    agent: Identifier
    priority: int = 0

    @model_validator(mode="after")
    def _glob_is_valid(self) -> Rule:
        if self.match.count("[") != self.match.count("]"):
            raise ValueError(f"rule {self.name!r}: glob {self.match!r} has unbalanced brackets")
        return self


class RegionConfig(_Strict):
    """``neighbours`` is the spill-over order: nearest first."""

    neighbours: list[Region] = Field(default_factory=list)


class PinnedPool(_Strict):
    """A pool known before its first heartbeat (so ``doctor`` and ``status`` can name it)."""

    id: PoolId
    agent: Identifier
    region: Region


class OrchestratorConfig(_Strict):
    join_deadline_s: float = Field(default=15.0, gt=0)
    # A dispatch still without a job this long after CreateDispatch was dropped by LiveKit (no
    # worker available to it then, or its ~3 s assignment budget ran out): dispatch again at once
    # instead of waiting for the join deadline. LiveKit lists a running job that has not joined
    # yet only after ~5 s (measured on v1.13.5), so this must stay well above that.
    assign_check_s: float = Field(default=8.0, gt=0)
    voice_deadline_s: float = Field(default=20.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    dead_after_missed_beats: int = Field(default=3, ge=1)
    # Across regions (a replica started with --region / SWITCHBOARD_REGION): a region whose every
    # pool goes silent at once is cut off (a gateway, its NATS), not dead, until it has been silent
    # this long while the replica hears other regions; then its pools are dead and its rooms go
    # abroad. Longer than a gateway blip, shorter than users will wait; never below the pool death
    # limit (dead_after_missed_beats x heartbeat_interval_s), which applies when it is longer.
    region_lost_after_s: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=4, ge=1)
    no_pool_deadline_s: float = Field(default=60.0, gt=0)
    dispatch_deadline_s: float = Field(default=10.0, gt=0)
    # Accepted so older configs still load; no longer used: a round of retries that finds LiveKit
    # unreachable puts the room in `waiting_for_livekit` instead of counting towards a failure.
    max_dispatch_rounds: int = Field(default=6, ge=1)
    # While LiveKit's API is unreachable a room waits this long between rounds of dispatch tries,
    # and fails (`livekit_unreachable`) only after waiting `livekit_wait_deadline_s` in all.
    livekit_retry_s: float = Field(default=5.0, gt=0)
    # A room LiveKit lists, but whose node answers nothing about it (a crashed LiveKit node leaves
    # its rooms listed in Redis, and every call that must reach the room's node answers 503): after
    # this long with its agents' removal failing so, the room is ended (room_unreachable), its
    # agents counted gone with the node, instead of being asked about forever.
    room_unreachable_after_s: float = Field(default=60.0, gt=0)
    livekit_wait_deadline_s: float = Field(default=600.0, gt=0)
    # Anti-entropy: every resync_interval_s each replica lists LiveKit's rooms and compares them
    # with the records of the partitions it tracks (rooms whose webhook was lost, records whose
    # room is gone, agents gone silently). 0 turns it off. Rooms and records younger than
    # resync_grace_s are left to their events, which are normally in flight at that age.
    resync_interval_s: float = Field(default=5.0, ge=0)
    resync_grace_s: float = Field(default=3.0, ge=0)
    sweep_interval_s: float = Field(default=0.25, gt=0)
    # Replicas divide the rooms among the live ones: a replica silent this long (its membership key
    # not renewed) is gone, and its share is taken over by the others. A replica that stops
    # cleanly hands its share over at once.
    member_ttl_s: float = Field(default=3.0, ge=1.0, le=60.0)
    # How long a room's full record stays in the archive after it ended, failed or was ignored
    # (for `explain`); JetStream expires it then. 0 keeps records for good.
    terminal_record_ttl_s: float = Field(default=7 * 24 * 3600.0, ge=0)
    # How long the rooms bucket keeps an ended room's compact record: what a duplicate or late
    # event, and the resync, are judged against (a room's events arrive within JetStream's 600 s
    # duplicate window; LiveKit closes an empty room within minutes). Every replica replays these
    # at start-up, so they are kept short.
    ended_record_ttl_s: float = Field(default=3600.0, ge=600)
    seed: int | None = None
    # How the scheduler picks inside a region tier: power-of-two-choices over headroom (spreads a
    # burst) or always the most headroom (herds; kept for comparison, see bench/).
    strategy: Literal["p2c", "least_loaded"] = "p2c"

    @field_validator("terminal_record_ttl_s", "ended_record_ttl_s")
    @classmethod
    def _whole_seconds_or_off(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError("must be 0 (keep records) or at least 1 second (JetStream's smallest TTL)")
        return value


class WorkerConfig(_Strict):
    capacity: int = Field(default=4, ge=1, le=1000)
    # An hour, as livekit-agents' own drain and LiveKit Cloud: a rolling deploy lets calls finish
    # (issue 16); when a grace does end, the rooms are handed over (cause `drain`).
    drain_grace_s: float = Field(default=3600.0, ge=0)
    allow_remote_kill: bool = False


class IngestConfig(_Strict):
    """The webhook endpoint (``switchboard ingest``). Loopback by default: put a proxy or an ingress
    in front of it rather than exposing it directly."""

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    path: str = Field(default="/webhook", pattern=r"^/[A-Za-z0-9/_-]*$")
    # LiveKit's room_started carries the room's metadata; 256 KiB leaves room for large metadata
    # while bounding what one request can make us hold in memory.
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Home region of rooms whose metadata names none; None: ``default_region``.
    region: Region | None = None
    # How long a JetStream publish may take before the webhook is answered 503 (LiveKit retries).
    publish_timeout_s: float = Field(default=3.0, gt=0, le=30)
    # How long a request's body may take to arrive before it is answered 408 (LiveKit sends a
    # small body at once; a slow client must not hold a connection and a handler for long).
    body_read_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # A connection that has not sent a whole request head within this of opening (or of its last
    # request) is closed: headers sent a byte at a time hold nothing for long.
    idle_timeout_s: float = Field(default=10.0, gt=0, le=600)
    # Open connections at most, in all and from one client address (orchestrator/ingest/connections.py).
    max_connections: int = Field(default=1024, ge=1, le=100_000)
    max_connections_per_client: int = Field(default=64, ge=1, le=100_000)


class SwitchboardConfig(_Strict):
    default_region: Region = "eu-central"
    regions: dict[Region, RegionConfig] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    pools: list[PinnedPool] = Field(default_factory=list)
    orchestrator: OrchestratorConfig = Field(default_factory=OrchestratorConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    # Base URL of a trace UI (Jaeger, Tempo via Grafana...): ``explain`` prints <base>/trace/<id>.
    trace_ui_url: Annotated[str, Field(max_length=512, pattern=r"^https?://")] | None = None
    # Where the rooms' streams and buckets live (docs/ARCHITECTURE.md, "Regions"). "shared": one
    # set, in one NATS cluster (or one cluster of a supercluster). "per_region": each region's own
    # set in the NATS cluster named like the region, so a region cut off from the others keeps taking
    # and serving its rooms; every orchestrator, ingest and CLI then runs with its region
    # (--region / SWITCHBOARD_REGION) and works on that region's rooms.
    state: Literal["shared", "per_region"] = "shared"

    def known_regions(self) -> set[str]:
        return set(self.regions) | {self.default_region}

    def cells(self, region: str | None) -> list[Cell]:
        """The cells an operator command reads: the one of ``region`` when given (or the shared
        one), else, with per-region state, every known region's."""
        if self.state == "shared" or region is not None:
            return [self.cell(region)]
        return [Cell(r) for r in sorted(self.known_regions())]

    def cell_or_default(self, region: str | None) -> Cell:
        """:meth:`cell`, with per-region state and no region given the default region's (an
        operator command's, which may run anywhere)."""
        return self.cell(region or (self.default_region if self.state == "per_region" else None))

    def cell(self, region: str | None) -> Cell:
        """The cell a process of ``region`` works on; raises ``ConfigError`` saying what to set."""
        if self.state == "shared":
            return SHARED
        if region is None:
            raise ConfigError(
                "state: per_region keeps each region's rooms in its own streams: start this process "
                "with its region (--region or SWITCHBOARD_REGION)"
            )
        if region not in self.known_regions():
            raise ConfigError(
                f"region {region!r} is not in the config; known: {', '.join(sorted(self.known_regions()))}"
            )
        return Cell(region)

    @model_validator(mode="after")
    def _references_exist(self) -> SwitchboardConfig:
        known = self.known_regions()
        for region, cfg in self.regions.items():
            for n in cfg.neighbours:
                if n not in self.regions:
                    raise ValueError(f"region {region!r} names neighbour {n!r}, which is not under 'regions'")
                if n == region:
                    raise ValueError(f"region {region!r} lists itself as a neighbour")
        for pool in self.pools:
            if self.regions and pool.region not in known:
                raise ValueError(
                    f"pool {pool.id!r} is in region {pool.region!r}, which is not under 'regions'"
                )
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dupes)}")
        return self


class ConfigError(ValueError):
    """The config file is unreadable or invalid; the message names the file and the field."""


def parse_config(data: Any, source: str = "<config>") -> SwitchboardConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return SwitchboardConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, limit=10)}") from None


def load_config(path: Path) -> SwitchboardConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return parse_config(data, str(path))
