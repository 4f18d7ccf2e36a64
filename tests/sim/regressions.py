"""Named, scripted scenarios: fixed faults at fixed times, each a sequence the controller before
the reconciler got wrong (the violation it ended in is noted). ``python -m tests.sim --scenario
NAME`` replays one verbosely; tests/sim/test_regressions.py runs them all.

Timings below use the sim config (tests/sim/config.py): join and voice deadlines 10 s, sweeps
every 0.5 s, LiveKit calls time out after 2 s, a replica takes messages 1.5 s after it starts.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.messages import AgentStatus
from tests.sim.delivery import Envelope
from tests.sim.faults import Rule
from tests.sim.replica import Replica
from tests.sim.scenario import Event, RoomScript, Scenario
from tests.sim.world import World

TWO_POOLS = [("eu-a", "eu-central", 4), ("eu-b", "eu-central", 4)]


def _reports_to_a_bystander(env: Envelope, ready: list[Replica], world: World) -> Replica | None:
    """Status reports go to a replica other than the one whose name is on the room's record
    (the one driving it); room events to the first replica."""
    if isinstance(env.msg, AgentStatus):
        rec = world.kv.peek(env.msg.room)
        others = [r for r in ready if rec is None or r.name != rec.owner]
        return others[0] if others else None
    return ready[0]


def late_join_during_redispatch() -> Scenario:
    """(1) The first agent is late: the join deadline passes and a replica moves the room to
    redispatching; its DeleteDispatch takes 1.5 s. Just then the old agent joins (LiveKit's delete
    does not stop an assigned job) and is heard; both reports reach the other replica while the
    record still says redispatching with the old dispatch id, and are dropped. The old agent's
    identity was never recorded, so nothing removes it; the new dispatch brings a second agent.
    Before the reconciler: ``double_agent``."""
    return Scenario(
        name="late_join_during_redispatch",
        replicas=2,
        pools=TWO_POOLS,
        rooms=[RoomScript("room-1", at=3.0)],
        heal_at=60.0,
        phases=[0.0, 0.25],
        router=_reports_to_a_bystander,
        rules=[
            Rule("job", "assign", room="room-1", attempt=1, delay=0.1),
            Rule("job", "join", room="room-1", attempt=1, delay=10.6),
            Rule("job", "voice", room="room-1", attempt=1, delay=0.2),
            Rule("lk", "delete_dispatch", room="room-1", delay=1.5),
        ],
    )


def late_join_after_confirmed_removal() -> Scenario:
    """(1b) As (1), but the old agent joins 1.4 s after the redispatch has already removed its
    dispatch and confirmed with LiveKit's participant list that none of the dispatch's agents is in
    the room — LiveKit named the job's agent (its identity is assigned with the job) but it had not
    connected yet. When it does connect, its reports come from a dispatch whose removal is already
    confirmed. The old controller removed it as a stale agent; the reconciler's first version took
    the reports for late copies and ignored them: ``double_agent``."""
    return Scenario(
        name="late_join_after_confirmed_removal",
        replicas=1,
        pools=TWO_POOLS,
        rooms=[RoomScript("room-1", at=3.0)],
        heal_at=60.0,
        rules=[
            Rule("job", "assign", room="room-1", attempt=1, delay=0.1),
            Rule("job", "join", room="room-1", attempt=1, delay=11.5),
        ],
    )


def resume_own_dispatch_after_kv_timeout() -> Scenario:
    """(2a) CreateDispatch lands and is answered; the write of ``dispatched`` fails (a KV timeout,
    reported after 0.2 s here) before the KV applied it. The record still says dispatching, owned by
    this replica, so its next sweep resumes the step as its own and calls CreateDispatch again
    without looking (before the agent's report could have the first dispatch adopted).
    Before the reconciler: ``blind_redispatch`` (then two agents until the stale one reports)."""
    return Scenario(
        name="resume_own_dispatch_after_kv_timeout",
        replicas=1,
        pools=TWO_POOLS[:1],
        rooms=[RoomScript("room-1", at=3.0)],
        heal_at=40.0,
        rules=[
            Rule("kv", "update", room="room-1", state="dispatched", outcome="timeout_before", delay=0.2),
            Rule("job", "join", room="room-1", attempt=1, delay=3.0),
        ],
    )


def resume_own_dispatch_after_lost_renewal() -> Scenario:
    """(2b) LiveKit refuses for 4.6 s, so CreateDispatch is retried long enough for the lease to be
    renewed; the renewal's write lands but its answer is lost, so the replica's idea of the
    revision is stale. CreateDispatch then succeeds; the ``dispatched`` write loses its
    compare-and-set; the controller re-reads, finds the step still its own, and dispatches again
    without looking. Before the reconciler: ``blind_redispatch``."""
    return Scenario(
        name="resume_own_dispatch_after_lost_renewal",
        replicas=1,
        pools=TWO_POOLS[:1],
        rooms=[RoomScript("room-1", at=3.0)],
        heal_at=40.0,
        timeline=[Event(2.9, "lk_outage", duration=4.6)],
        rules=[Rule("kv", "update", room="room-1", state="dispatching", nth=1, outcome="timeout_after")],
    )


def failing_room_cancels_siblings() -> Scenario:
    """(3) Two rooms' first placement writes time out, so both wait for the sweep. In that sweep the
    KV read of room-1 fails with a TimeoutError (not Conflict nor LiveKitCallError) while room-2 is
    waiting for its CreateDispatch answer (already applied in LiveKit): the sweep's TaskGroup
    cancels room-2's step mid-call. The next sweep resumes room-2's step as its own and dispatches
    again without looking. Before the reconciler: ``blind_redispatch``."""
    return Scenario(
        name="failing_room_cancels_siblings",
        replicas=1,
        pools=TWO_POOLS[:1],
        rooms=[RoomScript("room-1", at=3.0), RoomScript("room-2", at=3.05)],
        heal_at=40.0,
        rules=[
            Rule("kv", "update", room="room-1", state="dispatching", outcome="timeout_before", delay=0.1),
            Rule("kv", "update", room="room-2", state="dispatching", outcome="timeout_before", delay=0.1),
            Rule("kv", "get", room="room-1", activity="sweep", outcome="timeout_before", delay=0.3),
            Rule("lk", "create_dispatch", room="room-2", delay=0.05, answer=1.0),
            # Its agent takes 3 s to connect, so its report cannot have the dispatch adopted first.
            Rule("job", "join", room="room-2", attempt=1, delay=3.0),
        ],
    )


def _failover_with_removal_blip(name: str, op: str) -> Callable[[], Scenario]:
    def scenario() -> Scenario:
        return Scenario(
            name=name,
            replicas=1,
            pools=TWO_POOLS,
            rooms=[RoomScript("room-1", at=3.0)],
            heal_at=60.0,
            rules=[
                Rule("job", "voice", room="room-1", attempt=1, outcome="mute"),
                Rule("lk", op, room="room-1", outcome="blip"),
            ],
        )

    scenario.__doc__ = f"""(5) The first agent joins but is never heard: at the voice deadline the room
    fails over. The old agent's removal hits one LiveKit 503 on {op}; the controller logs it and
    goes on, and never tries again. The new agent joins; the old one stays.
    Before the reconciler: ``double_agent``."""
    return scenario


failover_swallows_failed_remove = _failover_with_removal_blip(
    "failover_swallows_failed_remove", "remove_participant"
)
failover_swallows_failed_delete = _failover_with_removal_blip(
    "failover_swallows_failed_delete", "delete_dispatch"
)


def stale_agent_removal_swallowed() -> Scenario:
    """(6) CreateDispatch is slow: it lands after the caller's 2 s timeout, and the look that
    follows comes before it, so a second dispatch is made (unavoidable). The first dispatch's agent
    joins and reports; it is stale, but both tries to remove it (on joined, on voice) hit a 503 and
    are only logged. Before the reconciler: ``double_agent``."""
    return Scenario(
        name="stale_agent_removal_swallowed",
        replicas=1,
        pools=TWO_POOLS[:1],
        rooms=[RoomScript("room-1", at=3.0)],
        heal_at=60.0,
        rules=[
            Rule("lk", "create_dispatch", room="room-1", nth=0, outcome="slow", delay=2.5),
            Rule("job", "join", room="room-1", attempt=1, delay=1.0),
            Rule("lk", "delete_dispatch", room="room-1", outcome="blip", times=2),
        ],
    )


def room_ended_before_created() -> Scenario:
    """(7) The room ends 0.5 s after it was created; the RoomCreated handler's first KV write times
    out, so RoomEnded is handled first (no record yet: nothing to do) and RoomCreated only on its
    redelivery. The controller then dispatches into a room that is gone: CreateDispatch creates it
    again, an agent joins, and the record says speaking for good in a room no user is in.
    Before the reconciler: ``ended_room_not_terminal``."""
    return Scenario(
        name="room_ended_before_created",
        replicas=1,
        pools=TWO_POOLS[:1],
        rooms=[RoomScript("room-1", at=3.0, end_at=3.5)],
        heal_at=30.0,
        rules=[Rule("kv", "create", room="room-1", outcome="timeout_before", delay=1.0)],
    )


def worker_restart_loses_agent() -> Scenario:
    """(8) The worker running the room's (speaking) agent crashes and its pool is back 1 s later (a
    restarted process; equally, one worker of a pool with others alive): the pool never looks dead,
    so nothing fails the room over. LiveKit drops the dead agent 15 s later, without a report.
    Before the reconciler: ``speaking_without_agent``."""
    return Scenario(
        name="worker_restart_loses_agent",
        replicas=1,
        pools=TWO_POOLS,
        rooms=[RoomScript("room-1", at=3.0)],
        heal_at=40.0,
        timeline=[Event(12.0, "crash_pool", "eu-a", 1.0), Event(12.0, "crash_pool", "eu-b", 1.0)],
    )


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "late_join_during_redispatch": late_join_during_redispatch,
    "late_join_after_confirmed_removal": late_join_after_confirmed_removal,
    "resume_own_dispatch_after_kv_timeout": resume_own_dispatch_after_kv_timeout,
    "resume_own_dispatch_after_lost_renewal": resume_own_dispatch_after_lost_renewal,
    "failing_room_cancels_siblings": failing_room_cancels_siblings,
    "failover_swallows_failed_remove": failover_swallows_failed_remove,
    "failover_swallows_failed_delete": failover_swallows_failed_delete,
    "stale_agent_removal_swallowed": stale_agent_removal_swallowed,
    "room_ended_before_created": room_ended_before_created,
    "worker_restart_loses_agent": worker_restart_loses_agent,
}
