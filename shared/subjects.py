"""Every NATS subject, stream, consumer and KV bucket name Switchboard uses, in one place.

Other backends publish room events on these subjects, so the names are part of the public
contract: change them only with a schema version bump and a migration note.
"""

from __future__ import annotations

import re

PREFIX = "switchboard"

# Room events (JetStream, stream ROOMS).
ROOM_CREATED = f"{PREFIX}.rooms.created"
ROOM_ENDED = f"{PREFIX}.rooms.ended"
# A manual dispatch (``switchboard dispatch``): a RoomCreated whose metadata may hold the override
# (orchestrator/override.py). Only here is an override obeyed, and only the operator's NATS user may
# publish here (deploy/nats/accounts.conf); on ROOM_CREATED the override key is dropped.
ROOM_MANUAL = f"{PREFIX}.rooms.manual"
# Join / voice / left / error reports from the workers (JetStream, stream ROOMS_STATUS), each on
# its pool's subject switchboard.rooms.status.<pool> (room_status): a worker's NATS user may publish
# only its own pool's (deploy/nats/accounts.conf), and the orchestrator drops a report whose body
# names another pool. Workers before issue 17 published on ROOM_STATUS itself, still taken.
ROOM_STATUS = f"{PREFIX}.rooms.status"
ROOM_STATUS_WILDCARD = f"{ROOM_STATUS}.*"
# Messages that failed validation, with the reason in a header (JetStream, stream DEAD_LETTER).
DEAD_LETTER = f"{PREFIX}.dead"

# Pool heartbeats (core NATS): switchboard.pools.<pool>.heartbeat
POOL_HEARTBEAT_WILDCARD = f"{PREFIX}.pools.*.heartbeat"
# Control messages to one pool's workers (core NATS): drain, and the drill's hard exit.
POOL_CONTROL_WILDCARD = f"{PREFIX}.pools.*.control"

# The pools as the orchestrator replicas judge them (core NATS request/reply, queue group
# ORCHESTRATOR_QUEUE: one replica answers with a PoolCensusReply).
POOL_CENSUS = f"{PREFIX}.orchestrator.pools"
ORCHESTRATOR_QUEUE = "orchestrator"

ROOMS_STREAM = "SWITCHBOARD_ROOMS"
STATUS_STREAM = "SWITCHBOARD_STATUS"
DEAD_LETTER_STREAM = "SWITCHBOARD_DEAD"
ORCHESTRATOR_CONSUMER = "orchestrator"
ROOMS_BUCKET = "switchboard_rooms"
# The resync's lease (one replica lists LiveKit's rooms per interval) and its last pass, key "pass".
RESYNC_BUCKET = "switchboard_resync"
RESYNC_KEY = "pass"
# The full records of ended rooms (the rooms bucket keeps a compact form for an hour), for explain.
ARCHIVE_BUCKET = "switchboard_rooms_archive"
# Live orchestrator replicas: key m.<replica> renewed every second with a per-message TTL; the
# replicas divide the rooms' partitions among the members (orchestrator/membership.py).
MEMBERS_BUCKET = "switchboard_members"
# Each live replica answers requests on its own presence subject (core NATS): a request that NATS
# answers "no responders" proves the replica's connection is gone (orchestrator/membership.py).
PRESENCE_PREFIX = f"{PREFIX}.orchestrator.presence"


def presence(member: str) -> str:
    return f"{PRESENCE_PREFIX}.{member}"


# In-flight rooms per pool of each replica's partitions (core NATS; orchestrator/peer_reservations.py).
RESERVATIONS = f"{PREFIX}.orchestrator.reservations"

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
    return f"{ROOM_STATUS}.{check_pool_id(pool)}"


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
