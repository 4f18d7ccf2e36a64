"""The simulated deployment: the Switchboard config the replicas run with, and the world's timings.

Timings are scaled down from the production defaults (shorter deadlines, fewer dispatch rounds) so
one seed's whole life — faults, then healing, then every timer firing — is a few hundred virtual
seconds; their ratios are kept (assignment check above LiveKit's assignment time, lease above one
dispatch budget, and so on).
"""

from __future__ import annotations

from orchestrator.service import ROOMS_CONSUMER
from shared.config import OrchestratorConfig, RegionConfig, Rule, SwitchboardConfig

# Virtual time 0 is this wall-clock instant (records carry unix seconds).
EPOCH = 1_750_000_000.0

AGENT = "ornina"
# (pool id, region): the sim's worker pools are drawn from these, in this order.
POOLS: tuple[tuple[str, str], ...] = (("eu-a", "eu-central"), ("eu-b", "eu-central"), ("we-a", "eu-west"))
ROOM_PREFIX = "room-"  # matched by the rule: these rooms get an agent
LOBBY_PREFIX = "lobby-"  # matched by no rule: these rooms are ignored

ORCHESTRATOR = OrchestratorConfig(
    join_deadline_s=10.0,
    assign_check_s=6.0,
    voice_deadline_s=10.0,
    heartbeat_interval_s=1.0,
    dead_after_missed_beats=3,
    max_attempts=4,
    no_pool_deadline_s=30.0,
    dispatch_deadline_s=6.0,
    max_dispatch_rounds=3,
    sweep_interval_s=0.5,
    terminal_record_ttl_s=0,
    # Issue 14: every replica lists LiveKit's rooms every 5 s (and compares them with the records
    # of its partitions); a room waiting for LiveKit tries again every 2 s and fails only after
    # 150 s of waiting in all — far beyond the longest outage the sim draws (LONG_OUTAGE_S), so no
    # room may fail of one.
    resync_interval_s=5.0,
    resync_grace_s=3.0,
    livekit_retry_s=2.0,
    livekit_wait_deadline_s=150.0,
    # The replicas divide the rooms (orchestrator/partitions.py): a crashed replica's partitions
    # move to the others this long after its last membership renewal (production's default; the
    # heartbeat timings it is measured against are not scaled either).
    member_ttl_s=3.0,
)

# --- the stand-ins' timings ---------------------------------------------------------------------
# The gateway's per-call timeout (LiveKitSettings.request_timeout_s, 5 s in production).
LK_TIMEOUT_S = 2.0
# A NATS KV request that gets no answer fails after this (nats-py's JetStream timeout).
KV_TIMEOUT_S = 2.0
# The real service's JetStream consumer (orchestrator/consumer.py): redelivery after a crash, the
# nak backoff, when a message that keeps failing (not transiently) is dead-lettered.
CONSUMER = ROOMS_CONSUMER
ACK_WAIT_S = CONSUMER.ack_wait_s
# The longest a published message waits before its (first) delivery, delay faults included.
MSG_DELAY_MAX_S = 2.0
# A crashed worker's agents stay in LiveKit's participant list this long, then LiveKit drops them.
AGENT_GHOST_S = 15.0
# The real service listens to heartbeats this long before it takes messages or sweeps.
WARMUP_S = 1.5 * ORCHESTRATOR.heartbeat_interval_s
# Core NATS and the members bucket's watch: a message reaches a subscriber this long after it
# was sent (the membership keys, the reservations reports).
NOTIFY_LAG_S = (0.001, 0.02)
# A room CreateDispatch made (a ghost) closes once it has been empty this long: LiveKit's
# departure timeout (20 s by default; its empty_timeout for a room nobody ever joined is longer,
# one value here keeps the world simple).
GHOST_EMPTY_S = 20.0
# The long LiveKit outage (a seed's ``long_outage``): its length, refused for the first half,
# unanswered for the second. Longer than a few dispatch rounds (dispatch_deadline_s each), well
# inside livekit_wait_deadline_s.
LONG_OUTAGE_S = (4 * ORCHESTRATOR.dispatch_deadline_s, 9 * ORCHESTRATOR.dispatch_deadline_s)
assert LONG_OUTAGE_S[1] + ORCHESTRATOR.dispatch_deadline_s < ORCHESTRATOR.livekit_wait_deadline_s / 2


def nak_delay(delivered: int) -> float:
    """The consumer's redelivery delay after delivery ``delivered`` failed."""
    return CONSUMER.backoff_s(delivered)


# How long two agents may share a room before it is a double agent (invariant 1). Some overlap is
# unavoidable for any controller: a late agent (a job LiveKit started after its dispatch was
# replaced or deleted) is only known once its report arrives, and removing it takes LiveKit calls.
#   the report's delivery:                  MSG_DELAY_MAX_S                         2.0
#   the replica handling it crashed:        + ACK_WAIT_S (JetStream redelivers)    10.0
#   a KV blip failed the handler once:      + KV_TIMEOUT_S + nak_delay(1)           2.5
#   DeleteDispatch + RemoveParticipant:     + 2 * LK_TIMEOUT_S                      4.0
#   a blip on them, retried next sweep:     + sweep_interval_s + 2 * LK_TIMEOUT_S   4.5
# = 23 s; a crashed worker's ghost agents (AGENT_GHOST_S) fit in it too. It is counted from the
# last time the world stood in the way: an outage's end, no replica alive, a LiveKit or KV call
# about the room that failed (tests/sim/invariants.py).
REMOVAL_BOUND_S = (
    MSG_DELAY_MAX_S
    + ACK_WAIT_S
    + KV_TIMEOUT_S
    + nak_delay(1)
    + 2 * LK_TIMEOUT_S
    + ORCHESTRATOR.sweep_interval_s
    + 2 * LK_TIMEOUT_S
)
assert REMOVAL_BOUND_S > AGENT_GHOST_S


def sim_config(seed: int, pools: int) -> SwitchboardConfig:
    """The config every replica of one run reads: one rule for ``room-*`` rooms, two regions that
    spill into each other, and the decision seed fixed (placement is then a function of the run)."""
    regions = sorted({region for _, region in POOLS[:pools]} | {"eu-central", "eu-west"})
    return SwitchboardConfig(
        default_region="eu-central",
        regions={r: RegionConfig(neighbours=[n for n in regions if n != r]) for r in regions},
        rules=[Rule(name="rooms", match=f"{ROOM_PREFIX}*", agent=AGENT)],
        orchestrator=ORCHESTRATOR.model_copy(update={"seed": seed}),
    )
