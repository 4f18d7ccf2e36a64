"""Named, scripted scenarios: fixed faults at fixed times, each a sequence the controller before
the reconciler got wrong (the violation it ended in is noted). ``python -m tests.sim --scenario
NAME`` replays one verbosely; tests/sim/test_regressions.py runs them all.

Timings below use the sim config (tests/sim/config.py): join and voice deadlines 10 s, sweeps
every 0.5 s, LiveKit calls time out after 2 s, a replica takes messages 1.5 s after it starts.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.messages import AgentStatus, RoomCreated, RoomEnded
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


# -- issue 14: room lifecycle edges ------------------------------------------------------------
# Timings: the resync lists LiveKit's rooms every 5 s (from 5 s after a replica starts) and leaves
# rooms and records younger than 3 s to their events; a ghost room closes 20 s after it is empty.


def lost_room_started() -> Scenario:
    """(9) room-1's RoomCreated is never published (LiveKit's notifier dropped it; an ingest
    restart is enough). The resync finds it in LiveKit's room list once it is older than the grace
    and serves it as its event would have (origin ``resync``, nothing published).
    Before issue 14: ``lost`` (no record, ever)."""
    return Scenario(
        name="lost_room_started",
        replicas=2,
        pools=TWO_POOLS,
        rooms=[RoomScript("room-1", at=3.0, lost_created=True)],
        heal_at=30.0,
    )


def lost_room_finished() -> Scenario:
    """(9b) One pool with room for one agent: room-1 has it, room-2 waits for a pool. room-2 ends
    and its RoomEnded is lost: nothing calls LiveKit about a waiting room, so only the resync can
    see it gone (``room_gone``) — else it waits, holding its place in the queue, until its
    no-pool deadline fails it. Before issue 14: ``ended_room_not_terminal`` until that deadline."""
    return Scenario(
        name="lost_room_finished",
        replicas=2,
        pools=[("eu-a", "eu-central", 1)],
        rooms=[RoomScript("room-1", at=3.0), RoomScript("room-2", at=4.0, end_at=8.0, lost_ended=True)],
        heal_at=30.0,
        expect={"room-2": "ended/room_gone"},
    )


def ended_before_created() -> Scenario:
    """(10) Two rooms live 0.4 s; each one's RoomEnded reaches NATS before its RoomCreated (another
    replica, a backlog), room-2's without sids. The end leaves a tombstone; the late start is a
    duplicate of it, never a dispatch (which would create the room again, a ghost)."""
    return Scenario(
        name="ended_before_created",
        replicas=2,
        pools=TWO_POOLS,
        rooms=[
            RoomScript("room-1", at=3.0, end_at=3.4, ended_first=True),
            RoomScript("room-2", at=3.0, end_at=3.4, ended_first=True, sidless=True),
        ],
        heal_at=30.0,
    )


def reused_name_while_live() -> Scenario:
    """(11) One pool with room for one agent, held by room-2 until 20 s: room-1 waits for a pool
    (live, no agent). room-1 ends and its RoomEnded is lost; 1 s later a user opens room-1 again,
    a new sid. Its RoomCreated must supersede the live record of the old sid (not be dropped as a
    duplicate), and the new room is served once the pool frees. Before issue 14: the new room was
    a duplicate (``unserved_room``)."""
    return Scenario(
        name="reused_name_while_live",
        replicas=1,
        pools=[("eu-a", "eu-central", 1)],
        rooms=[
            RoomScript("room-2", at=2.0, end_at=20.0),
            RoomScript("room-1", at=3.0, end_at=8.0, lost_ended=True),
            RoomScript("room-1", at=9.0, sid="RM_room-1.2"),
        ],
        heal_at=40.0,
    )


def reused_name_without_sid() -> Scenario:
    """(12) Three incarnations of room-1 in a row, every event without a sid (told apart by
    ``created_at``); the second one's RoomEnded is lost (its agent's ``left`` ends the record).
    Each must be served in turn. Before issue 14: the second and third were duplicates of the
    first's ended record (``unserved_room``)."""
    return Scenario(
        name="reused_name_without_sid",
        replicas=2,
        pools=TWO_POOLS,
        rooms=[
            RoomScript("room-1", at=3.0, end_at=10.0, sidless=True),
            RoomScript("room-1", at=12.0, end_at=20.0, sid="RM_room-1.2", sidless=True, lost_ended=True),
            RoomScript("room-1", at=21.0, sid="RM_room-1.3", sidless=True),
        ],
        heal_at=45.0,
    )


def _deleted_during_dispatch(name: str, when: str) -> Callable[[], Scenario]:
    def scenario() -> Scenario:
        return Scenario(
            name=name,
            replicas=1,
            pools=TWO_POOLS,
            rooms=[RoomScript("room-1", at=3.0, doomed=when)],
            heal_at=40.0,
            expect={"room-1": "ended/room_gone|ended/room_ended"},
            # The ghost's job at once: its agent is in the ghost room before the record ends.
            rules=[Rule("job", "assign", room="room-1", delay=0.01)],
        )

    moment = {
        "after_check": "right after the dispatch's existence check said it is there",
        "on_wire": "while CreateDispatch is on its way to LiveKit",
    }[when]
    scenario.__doc__ = f"""(13) room-1 is deleted {moment}. CreateDispatch creates it
    again (a ghost room, its own room_started goes out) and the dispatch's job goes to a worker.
    The record must end (``room_ended`` by its room's end, or ``room_gone`` when a look at LiveKit
    comes first), no agent may stay in the ghost (its worker refuses a job for another sid and
    deletes the room), and the ghost's room_started must not be served. Before issue 14:
    ``agent_in_ghost_room``."""
    return scenario


room_deleted_after_existence_check = _deleted_during_dispatch(
    "room_deleted_after_existence_check", "after_check"
)
room_deleted_while_dispatch_on_wire = _deleted_during_dispatch(
    "room_deleted_while_dispatch_on_wire", "on_wire"
)


def long_livekit_outage() -> Scenario:
    """(14) LiveKit's API is refused for 20 s, then unanswered for 20 s (every call times out),
    while four rooms arrive. Each waits (``waiting_for_livekit``, a round every livekit_retry_s)
    and is served once LiveKit is back; none fails. Before issue 14: ``failed`` rooms."""
    return Scenario(
        name="long_livekit_outage",
        replicas=2,
        pools=TWO_POOLS,
        rooms=[RoomScript(f"room-{i}", at=at) for i, at in enumerate((4.0, 9.0, 21.0, 38.0), 1)],
        heal_at=55.0,
        timeline=[Event(2.0, "lk_outage_long", duration=40.0)],
    )


# -- issue 14: sequences the first cut (a8e30a6) got wrong; those still open are KNOWN_BUGS in
# tests/sim/test_regressions.py -------------------------------------------------------------------


def _ghost_events_to_r1(env: Envelope, ready: list[Replica], world: World) -> Replica | None:
    """A ghost room's RoomCreated (sid RM_auto...) to the second replica, all else to the first."""
    ghost = isinstance(env.msg, RoomCreated) and (env.msg.sid or "").startswith("RM_auto")
    return ready[-1] if ghost else ready[0]


def ghost_started_on_another_replica() -> Scenario:
    """(15) room-1 is deleted while CreateDispatch is on the wire; the ghost's room_started reaches
    the other replica while the dispatching one is still checking the room's sid after the call
    (0.5 s here). The record says ``dispatching`` (sid RM_room-1) and knows no ghost yet, so the
    event is a newer incarnation: it supersedes the record and serves the ghost for good.
    ``agent_in_ghost_room`` until 72cc760 (the removal of the old dispatch finds it in that room,
    with nobody else: a ghost)."""
    return Scenario(
        name="ghost_started_on_another_replica",
        replicas=2,
        pools=TWO_POOLS,
        rooms=[RoomScript("room-1", at=3.0, doomed="on_wire")],
        heal_at=40.0,
        router=_ghost_events_to_r1,
        rules=[Rule("lk", "room_info", room="room-1", nth=1, delay=0.5)],
    )


def _ends_to_r1(env: Envelope, ready: list[Replica], world: World) -> Replica | None:
    return ready[-1] if isinstance(env.msg, RoomEnded) else ready[0]


def room_ended_while_dispatch_on_wire() -> Scenario:
    """(16) room-1 is deleted while CreateDispatch is on the wire and its RoomEnded ends the record
    on the other replica before the dispatching one has written what it saw (the sid after the call
    is another: a ghost). Its write loses the compare-and-set; decided again on the ended record,
    the landed dispatch is only remembered for removal and the ghost's sid is not kept. The ghost's
    room_started, waiting for the room's lock on the dispatching replica, then reads as a newer
    incarnation of an ended room, and is served. ``agent_in_ghost_room`` until 7e50768 (a dispatch
    that lands after its room ended marks the room it made a ghost)."""
    return Scenario(
        name="room_ended_while_dispatch_on_wire",
        replicas=2,
        pools=TWO_POOLS,
        rooms=[RoomScript("room-1", at=3.0, doomed="on_wire")],
        heal_at=40.0,
        router=_ends_to_r1,
        rules=[Rule("lk", "room_info", room="room-1", nth=1, delay=0.5)],
    )


def slow_dispatch_lands_after_room_end() -> Scenario:
    """(17) CreateDispatch is slow: LiveKit applies it 4.5 s after it was sent, after the caller's
    2 s timeout. The room ends at 4 s; the retry's existence check finds no room and ends the record
    (``room_gone``, no ghost known: nothing listed). Then the slow call lands and creates the room
    again; its room_started reads as a newer incarnation of the ended room, and is served.
    ``agent_in_ghost_room`` until 72cc760."""
    return Scenario(
        name="slow_dispatch_lands_after_room_end",
        replicas=1,
        pools=TWO_POOLS,
        rooms=[RoomScript("room-1", at=3.0, end_at=4.0)],
        heal_at=40.0,
        rules=[Rule("lk", "create_dispatch", room="room-1", nth=0, outcome="slow", delay=4.5)],
    )


def user_joins_ghost_room() -> Scenario:
    """(18) room-1 is deleted while its dispatch is on the wire (handled right: the record ends,
    the ghost's agent is removed, its room_started is known for a ghost). 6 s later a user opens
    room-1 again — and LiveKit puts them in the ghost room, still there (it closes 20 s after it
    is empty), so no room_started is sent. The resync lists the room under the ghost's sid and
    skips it as our own ghost for good: a user without an agent. ``unserved_room``."""
    return Scenario(
        name="user_joins_ghost_room",
        replicas=1,
        pools=TWO_POOLS,
        rooms=[
            RoomScript("room-1", at=3.0, doomed="on_wire"),
            RoomScript("room-1", at=10.0, sid="RM_room-1.2"),
        ],
        heal_at=40.0,
    )


def new_room_taken_for_ghost() -> Scenario:
    """(19) room-1's existence check before its dispatch gets no answer (timed out after 2 s: a
    read, no CreateDispatch was ever sent). Meanwhile room-1 ends and a user opens room-1 again (a
    new sid; its RoomCreated is lost). The retry's check finds the room under the new sid and, the
    step having met an ambiguous error, takes it for a room its own CreateDispatch may have made:
    the record ends with ``ghost_sid`` = the new room's sid. The resync then skips the new room as
    our ghost on every pass (and its RoomCreated would be ignored as one too): a user without an
    agent. ``unserved_room``."""
    return Scenario(
        name="new_room_taken_for_ghost",
        replicas=1,
        pools=TWO_POOLS,
        rooms=[
            RoomScript("room-1", at=3.0, end_at=4.0),
            RoomScript("room-1", at=4.5, sid="RM_room-1.2", lost_created=True),
        ],
        heal_at=40.0,
        rules=[Rule("lk", "room_info", room="room-1", nth=0, outcome="lost")],
    )


def sidless_end_processed_late() -> Scenario:
    """(20) room-1's events carry no sid. Its first incarnation ends at 10 s; the user opens room-1
    again 0.3 s later. The first one's agent leaves and its record ends (``room_gone``), the second
    one's RoomCreated (created later than that) is served; but the first one's RoomEnded, whose
    first handling hit a KV timeout, is redelivered only then: without sid or time it ends
    whatever record room-1 has — the second incarnation's — and removes its agent. Nothing brought
    it back (the resync saw a terminal record of the very sid LiveKit lists): ``ended_while_listed``
    until 4f1660a (a sid-less end published before the record's room was created ends nothing)."""
    return Scenario(
        name="sidless_end_processed_late",
        replicas=1,
        pools=TWO_POOLS,
        rooms=[
            RoomScript("room-1", at=3.0, end_at=10.0, sidless=True),
            RoomScript("room-1", at=10.3, sid="RM_room-1.2", sidless=True),
        ],
        heal_at=40.0,
        rules=[Rule("kv", "get", room="room-1", activity="RoomEnded", outcome="timeout_before", delay=2.0)],
    )


def sidless_dispatch_adopts_ghost() -> Scenario:
    """(21) room-1's events carry no sid. Its room is deleted while CreateDispatch is on the wire,
    and the call's answer is lost: the call made a ghost room and its dispatch. The retry's
    existence check finds room-1 — the ghost, but a record without a sid cannot tell — and the
    look finds the dispatch: the record takes the ghost's sid and the agent stays in the ghost.
    The room's (sid-less) RoomEnded then ends the record; the resync, seeing LiveKit still list a
    room of that sid, takes the end for a stale one and serves the record again, the ghost's.
    ``resurrected``: the revival of wrongly ended rooms (4f1660a) revives the ghost; the
    reconciler before issue 14 kept every invariant here."""
    return Scenario(
        name="sidless_dispatch_adopts_ghost",
        replicas=1,
        pools=TWO_POOLS,
        rooms=[RoomScript("room-1", at=3.0, doomed="on_wire", sidless=True)],
        heal_at=40.0,
        rules=[Rule("lk", "create_dispatch", room="room-1", nth=0, outcome="lost")],
    )


def _ghosts_apart(env: Envelope, ready: list[Replica], world: World) -> Replica | None:
    """The first ghost's RoomCreated (RM_auto1) to r1, everything else to r0."""
    if isinstance(env.msg, RoomCreated) and env.msg.sid == "RM_auto1":
        return next((r for r in ready if r.name == "r1"), None)
    return next((r for r in ready if r.name == "r0"), None)


def stale_ghost_event_takes_newer_ghosts_sid() -> Scenario:
    """(found by the partitioned campaign, seed 1003469; open) Two ghosts of room-1, one after the
    other. r0's first CreateDispatch is slow (applied 2.55 s later, after it timed out); its retry
    races the room's deletion and makes ghost RM_auto1 (AD_2), whose worker deletes it at once
    (the dispatch was for another room). The RoomEnded ends the record, but the removal of AD_2
    fails (LiveKit refuses r0's and r1's first participant lists), so it stays pending. The slow
    try lands: ghost RM_auto3 with AD_4 (same attempt key, given to no worker). r0 handles
    RM_auto3's room_started: our dispatch in it, no caller — the record remembers ``ghost_sid``
    RM_auto3 (rev 4), and r0's removal, going on with that record, finds AD_4 by its key and
    deletes it (slowly: 1 s). Meanwhile r1 handles RM_auto1's room_started, late (its create took
    0.55 s): to the record it is a newer room, so ``Effects.ghost_of(room-1, RM_auto1)`` lists the
    dispatches of the room *now* named room-1 — RM_auto3's AD_4, not deleted yet — and takes them
    as evidence about RM_auto1: ``ghost_sid`` becomes RM_auto1 (rev 5). Once AD_4 is gone nothing
    says RM_auto3 is ours: the tracker's (r1's) resync finds it listed, a newer room of the name
    with no evidence of a ghost, and serves it — an agent in a ghost room for good."""
    return Scenario(
        name="stale_ghost_event_takes_newer_ghosts_sid",
        replicas=2,
        pools=TWO_POOLS,
        rooms=[RoomScript("room-1", at=3.0, doomed="on_wire")],
        heal_at=60.0,
        phases=[0.0, 0.0],
        router=_ghosts_apart,
        rules=[
            Rule("lk", "create_dispatch", room="room-1", nth=0, outcome="slow", delay=2.55),
            Rule("job", "assign", room="room-1", delay=0.05),
            Rule("job", "join", room="room-1", delay=0.1),
            Rule("job", "assign", room="room-1", outcome="none"),
            Rule("lk", "participants", room="room-1", actor="r0", outcome="refuse"),
            Rule("lk", "participants", room="room-1", actor="r1", outcome="refuse", times=3),
            Rule("kv", "create", room="room-1", activity="RoomCreated room-1 RM_auto1", delay=0.55),
            Rule("lk", "delete_dispatch", room="room-1", actor="r0", delay=1.0, times=3),
        ],
    )


def sidless_room_replaced_while_dispatching() -> Scenario:
    """(found by the partitioned campaign, seed 2006985; open) room-1's events carry no sid. Its
    dispatch finds the room (RM_room-1) but CreateDispatch is refused, and LiveKit is down from
    3.5 s to 4.5 s. The room ends at 4.0 s (its RoomEnded waits for the room's lock) and a user
    opens room-1 again at 4.2 s (RM_room-1.2, no sids either). The next try, after the outage,
    sees the name under another sid: the record ends (``room_gone``) at ~4.5 s, after the new
    room was created — and, sid-less, it learnt no sid. The new room's RoomCreated
    (``created_at`` 4.2 s) is then not newer than that end (``incarnation``: a terminal sid-less
    record is superseded only by a room created after it ended): a duplicate. The resync's finding
    of it is too (``wrongly_ended`` only repairs ``room_ended``). The user's room is never served:
    ``unserved_room``."""
    return Scenario(
        name="sidless_room_replaced_while_dispatching",
        replicas=1,
        pools=TWO_POOLS,
        rooms=[
            RoomScript("room-1", at=3.0, end_at=4.0, sidless=True),
            RoomScript("room-1", at=4.2, sid="RM_room-1.2", sidless=True),
        ],
        heal_at=40.0,
        timeline=[Event(3.5, "lk_outage", duration=1.0)],
        rules=[Rule("lk", "create_dispatch", room="room-1", outcome="refuse", times=10)],
    )


def _created_to_r1(env: Envelope, ready: list[Replica], world: World) -> Replica | None:
    """RoomCreated to r1 (which tracks room-1 while the members are r0 and r1), the rest anywhere."""
    if isinstance(env.msg, RoomCreated):
        return next((r for r in ready if r.name == "r1"), None)
    return None


def _tracker_leaves_mid_dispatch(name: str, how: str) -> Callable[[], Scenario]:
    def scenario() -> Scenario:
        """(partitions) r1 tracks room-1 (its partition is r1's while r0 and r1 are the
        members) and handles its RoomCreated; its CreateDispatch takes 1 s to land, and 0.3 s in
        r1 {how}. LiveKit gives that dispatch no job, so only a sweep can get the room its agent,
        and only the room's tracker sweeps it: r0, once r1 has left its view — {when} — and r0
        has replayed r1's partitions. r1's lease on the dispatch step runs out, r0 looks for the
        dispatch before making another (finds r1's, landed after the crash), sees no job for it
        past the assignment check, and dispatches again. r1 comes back 20 s later (a new name,
        r1.2) and the partitions are divided again. Guards the takeover."""
        return Scenario(
            name=name,
            replicas=2,
            pools=TWO_POOLS,
            rooms=[RoomScript("room-1", at=3.0)],
            heal_at=40.0,
            phases=[0.0, 0.0],
            router=_created_to_r1,
            timeline=[Event(3.35, how, "1", 20.0)],
            rules=[
                Rule("lk", "create_dispatch", room="room-1", delay=1.0),
                Rule("job", "assign", room="room-1", attempt=1, outcome="none"),
            ],
            expect={"room-1": "speaking/not_assigned"},
        )

    leaves = "crashes" if how == "crash_replica" else "stops cleanly (its membership key deleted)"
    when = (
        "member_ttl_s after its last renewal arrived"
        if how == "crash_replica"
        else "as soon as the delete of its key arrives"
    )
    assert scenario.__doc__ is not None
    scenario.__doc__ = scenario.__doc__.format(how=leaves, when=when)
    return scenario


tracker_crashes_mid_dispatch = _tracker_leaves_mid_dispatch("tracker_crashes_mid_dispatch", "crash_replica")
tracker_stops_mid_dispatch = _tracker_leaves_mid_dispatch("tracker_stops_mid_dispatch", "stop_replica")


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
    "lost_room_started": lost_room_started,
    "lost_room_finished": lost_room_finished,
    "ended_before_created": ended_before_created,
    "reused_name_while_live": reused_name_while_live,
    "reused_name_without_sid": reused_name_without_sid,
    "room_deleted_after_existence_check": room_deleted_after_existence_check,
    "room_deleted_while_dispatch_on_wire": room_deleted_while_dispatch_on_wire,
    "long_livekit_outage": long_livekit_outage,
    "ghost_started_on_another_replica": ghost_started_on_another_replica,
    "room_ended_while_dispatch_on_wire": room_ended_while_dispatch_on_wire,
    "slow_dispatch_lands_after_room_end": slow_dispatch_lands_after_room_end,
    "user_joins_ghost_room": user_joins_ghost_room,
    "new_room_taken_for_ghost": new_room_taken_for_ghost,
    "sidless_end_processed_late": sidless_end_processed_late,
    "sidless_dispatch_adopts_ghost": sidless_dispatch_adopts_ghost,
    "stale_ghost_event_takes_newer_ghosts_sid": stale_ghost_event_takes_newer_ghosts_sid,
    "sidless_room_replaced_while_dispatching": sidless_room_replaced_while_dispatching,
    "tracker_crashes_mid_dispatch": tracker_crashes_mid_dispatch,
    "tracker_stops_mid_dispatch": tracker_stops_mid_dispatch,
}
