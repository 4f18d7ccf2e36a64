"""Every NATS subject, stream, consumer and KV bucket name Switchboard uses, in one place.

Other backends publish room events on these subjects, so the names are part of the public
contract: change them only with a schema version bump and a migration note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "switchboard"

# Pool heartbeats (core NATS): switchboard.pools.<pool>.heartbeat
POOL_HEARTBEAT_WILDCARD = f"{PREFIX}.pools.*.heartbeat"
# Control messages to one pool's workers (core NATS): drain, and the drill's hard exit.
POOL_CONTROL_WILDCARD = f"{PREFIX}.pools.*.control"

# The pools as the orchestrator replicas judge them (core NATS request/reply, queue group
# ORCHESTRATOR_QUEUE: one replica answers with a PoolCensusReply).
POOL_CENSUS = f"{PREFIX}.orchestrator.pools"
ORCHESTRATOR_QUEUE = "orchestrator"

ORCHESTRATOR_CONSUMER = "orchestrator"
# The resync's lease (one replica lists LiveKit's rooms per interval) and its last pass, key "pass".
RESYNC_KEY = "pass"


@dataclass(frozen=True)
class Cell:
    """The streams, buckets and subjects that hold one set of rooms.

    ``Cell(None)``, the shared cell, is the one set a single NATS cluster (or a supercluster with
    one place for the state) uses: the names below without a region. With per-region state
    (``state: per_region`` in switchboard.yaml) each region's rooms live in that region's own cell,
    placed in the NATS cluster named like the region: its names carry the region
    (``switchboard.region.<region>.rooms.created``, stream ``SWITCHBOARD_ROOMS_<region>``, bucket
    ``switchboard_rooms_<region>``), so a region cut off from the others keeps taking, placing and
    hearing about its own rooms (docs/ARCHITECTURE.md, "Regions").
    """

    region: str | None = None

    def _subject(self, rest: str) -> str:
        return f"{PREFIX}.{rest}" if self.region is None else f"{PREFIX}.region.{self.region}.{rest}"

    def _name(self, base: str) -> str:
        return base if self.region is None else f"{base}_{self.region}"

    # Room events (JetStream, the rooms stream).
    @property
    def room_created(self) -> str:
        return self._subject("rooms.created")

    @property
    def room_ended(self) -> str:
        return self._subject("rooms.ended")

    @property
    def room_manual(self) -> str:
        """A manual dispatch (``switchboard dispatch``): a RoomCreated whose metadata may hold the
        override (orchestrator/override.py). Only here is an override obeyed, and only the operator's
        NATS user may publish here (deploy/nats/accounts.conf); on room_created it is dropped."""
        return self._subject("rooms.manual")

    @property
    def room_status(self) -> str:
        """Join / voice / left / error reports from the workers (JetStream, the status stream), each
        on its pool's subject ``<room_status>.<pool>`` (:meth:`room_status_of`): a worker's NATS user
        may publish only its own pool's (deploy/nats/accounts.conf), and the orchestrator drops a
        report whose body names another pool. Workers before issue 17 published on this subject
        itself (shared cell only), still taken."""
        return self._subject("rooms.status")

    @property
    def room_status_wildcard(self) -> str:
        return f"{self.room_status}.*"

    def room_status_of(self, pool: str) -> str:
        return f"{self.room_status}.{check_pool_id(pool)}"

    @property
    def dead_letter(self) -> str:
        """Messages that failed validation, with the reason in a header (the dead-letter stream)."""
        return self._subject("dead")

    # In-flight rooms per pool of each replica's partitions (core NATS; peer_reservations.py): among
    # the replicas of one cell, whose partitions and watch revisions the reports name.
    @property
    def reservations(self) -> str:
        return (
            f"{PREFIX}.orchestrator.reservations"
            if self.region is None
            else f"{PREFIX}.region.{self.region}.orchestrator.reservations"
        )

    @property
    def rooms_stream(self) -> str:
        return self._name("SWITCHBOARD_ROOMS")

    @property
    def status_stream(self) -> str:
        return self._name("SWITCHBOARD_STATUS")

    @property
    def dead_letter_stream(self) -> str:
        return self._name("SWITCHBOARD_DEAD")

    @property
    def rooms_bucket(self) -> str:
        return self._name("switchboard_rooms")

    @property
    def archive_bucket(self) -> str:
        """The full records of ended rooms (the rooms bucket keeps a compact form for an hour)."""
        return self._name("switchboard_rooms_archive")

    @property
    def resync_bucket(self) -> str:
        return self._name("switchboard_resync")

    @property
    def members_bucket(self) -> str:
        """Live orchestrator replicas of this cell: key m.<replica> renewed with a per-message TTL;
        they divide the cell's partitions among them (orchestrator/membership.py)."""
        return self._name("switchboard_members")

    @property
    def placement_cluster(self) -> str | None:
        """The NATS cluster this cell's streams and buckets are created in (None: the server's)."""
        return self.region


SHARED = Cell()
# The shared cell's names, as older code and other backends know them.
ROOM_CREATED = SHARED.room_created
ROOM_ENDED = SHARED.room_ended
ROOM_MANUAL = SHARED.room_manual
ROOM_STATUS = SHARED.room_status
ROOM_STATUS_WILDCARD = SHARED.room_status_wildcard
DEAD_LETTER = SHARED.dead_letter
RESERVATIONS = SHARED.reservations
ROOMS_STREAM = SHARED.rooms_stream
STATUS_STREAM = SHARED.status_stream
DEAD_LETTER_STREAM = SHARED.dead_letter_stream
ROOMS_BUCKET = SHARED.rooms_bucket
ARCHIVE_BUCKET = SHARED.archive_bucket
RESYNC_BUCKET = SHARED.resync_bucket
MEMBERS_BUCKET = SHARED.members_bucket


# Each live replica answers requests on its own presence subject (core NATS): a request that NATS
# answers "no responders" proves the replica's connection is gone (orchestrator/membership.py).
PRESENCE_PREFIX = f"{PREFIX}.orchestrator.presence"


def presence(member: str) -> str:
    return f"{PRESENCE_PREFIX}.{member}"


# Header carrying the reason a message went to the dead-letter subject.
REJECT_REASON_HEADER = "Switchboard-Reject-Reason"
MSG_ID_HEADER = "Nats-Msg-Id"

# Pool ids become one NATS subject token and part of a LiveKit agent_name.
_POOL_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def check_pool_id(pool: str) -> str:
    """Return ``pool`` if it is a valid pool id, else raise ``ValueError`` saying why."""
    if not _POOL_TOKEN.fullmatch(pool):
        raise ValueError(
            f"pool id {pool!r} is invalid: use 1-63 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return pool


def pool_heartbeat(pool: str) -> str:
    return f"{PREFIX}.pools.{check_pool_id(pool)}.heartbeat"


def room_status(pool: str) -> str:
    return SHARED.room_status_of(pool)


def pool_of(subject: str, family: str) -> str | None:
    """The pool token of ``subject`` in a per-pool ``family`` (``switchboard.pools.*.heartbeat``,
    ``switchboard.rooms.status.*``); None when ``subject`` is not of that family."""
    parts, pattern = subject.split("."), family.split(".")
    if len(parts) != len(pattern) or "*" not in pattern:
        return None
    at = pattern.index("*")
    if any(p != q for i, (p, q) in enumerate(zip(parts, pattern, strict=True)) if i != at):
        return None
    return parts[at]


def pool_control(pool: str) -> str:
    return f"{PREFIX}.pools.{check_pool_id(pool)}.control"


_WORKER_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def worker_presence(pool: str, worker: str) -> str | None:
    """``switchboard.pools.<pool>.presence.<worker>``: each worker process answers requests there
    (core NATS), so "no responders" proves its connection is gone (orchestrator/worker_presence.py).
    None for a worker id that is not one subject token (such a worker is judged by its beats)."""
    if not _WORKER_TOKEN.fullmatch(worker):
        return None
    return f"{PREFIX}.pools.{check_pool_id(pool)}.presence.{worker}"


def pool_agent_name(agent: str, pool: str) -> str:
    """The LiveKit ``agent_name`` every worker of ``pool`` registers under.

    Convention: ``<agent>.<pool>`` — e.g. agent ``ornina-avatar-agent`` in pool ``eu-central-a``
    registers as ``ornina-avatar-agent.eu-central-a``. The orchestrator dispatches to exactly
    this name, so the two sides can never drift apart.
    """
    if not agent or any(c.isspace() for c in agent):
        raise ValueError(f"agent name {agent!r} is invalid: it must be non-empty and contain no whitespace")
    return f"{agent}.{check_pool_id(pool)}"
