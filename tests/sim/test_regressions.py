"""The named regression scenarios (tests/sim/regressions.py): scripted sequences the controller
before orchestrator/room/ got wrong (issue 13's sequences 1, 2, 3 and 5, and those the simulator
found), each failing on that code with the violation named below and kept by the reconciler; and
issue 14's room lifecycle edges (lost webhooks, ended before created, reused names, a room deleted
while its dispatch is in flight, a long LiveKit outage), with what they ended in before it. The
ones in ``KNOWN_BUGS`` fail today (strict xfail).
``python -m tests.sim --scenario NAME`` replays one step by step."""

from __future__ import annotations

import pytest

from tests.sim.regressions import SCENARIOS
from tests.sim.runner import run_scenario

# What each scenario ended in on the controller it was written against (orchestrator/controller.py,
# removed in favour of orchestrator/room/); the reconciler keeps every invariant in all of them.
FAILED_BEFORE: dict[str, str | None] = {
    "late_join_during_redispatch": "double_agent",
    "resume_own_dispatch_after_kv_timeout": "blind_redispatch",
    "resume_own_dispatch_after_lost_renewal": "blind_redispatch",
    "failing_room_cancels_siblings": "blind_redispatch",
    "failover_swallows_failed_remove": "double_agent",
    "failover_swallows_failed_delete": "double_agent",
    "stale_agent_removal_swallowed": "double_agent",
    "room_ended_before_created": "ended_room_not_terminal",
    "worker_restart_loses_agent": "speaking_without_agent",
    # Passed on the old controller; failed on the reconciler's first version.
    "late_join_after_confirmed_removal": "double_agent",
    # Issue 14's lifecycle edges, as they ended on the reconciler before it (eb1e24f, run with
    # these stand-ins); None: kept every invariant there too (the scenario guards the new code).
    "lost_room_started": "lost",
    "lost_room_finished": "unexpected_outcome",  # failed by the no-pool deadline, not ended
    "ended_before_created": None,  # the reconciler's tombstone already
    "reused_name_while_live": "unserved_room",
    "reused_name_without_sid": "unserved_room",
    "room_deleted_after_existence_check": "unexpected_outcome",  # the ghost served, speaking
    "room_deleted_while_dispatch_on_wire": "unexpected_outcome",  # ended, not room_gone
    "long_livekit_outage": "failed_for_livekit",
    # Sequences issue 14's first cut (a8e30a6) got wrong (the open ones: KNOWN_BUGS below).
    "ghost_started_on_another_replica": None,  # a new sid was a duplicate then
    "room_ended_while_dispatch_on_wire": None,
    "slow_dispatch_lands_after_room_end": "agent_in_ghost_room",
    "user_joins_ghost_room": "unserved_room",
    "new_room_taken_for_ghost": "unserved_room",
    "sidless_end_processed_late": "unserved_room",
    "sidless_dispatch_adopts_ghost": None,
    # Found by the first campaign with replicas dividing the rooms (seed 1003469; not partition
    # specific: any two replicas handling two ghosts' events). Open: KNOWN_BUGS.
    "stale_ghost_event_takes_newer_ghosts_sid": "agent_in_ghost_room",
    # Found by the same campaigns (seed 2006985), one replica is enough. Open: KNOWN_BUGS.
    "sidless_room_replaced_while_dispatching": "unserved_room",
    # Replicas dividing the rooms (f988310): a takeover, guarded from the start.
    "tracker_crashes_mid_dispatch": None,
    "tracker_stops_mid_dispatch": None,
}

# Scenarios the current orchestrator fails, with the violation (reported to the lead; a strict
# xfail turns into a failure once fixed: then move the scenario out of this table).
# Fixed since: room_ended_while_dispatch_on_wire (agent_in_ghost_room, 7e50768),
# sidless_end_processed_late (ended_while_listed, 4f1660a), ghost_started_on_another_replica and
# slow_dispatch_lands_after_room_end (agent_in_ghost_room, 72cc760), new_room_taken_for_ghost
# (unserved_room: a ghost is marked only on evidence, our key's dispatch found in the new room),
# user_joins_ghost_room (unserved_room: the resync serves our ghost once a caller is in it) and
# sidless_dispatch_adopts_ghost (resurrected: a round's tries compare the sid the first one saw),
# stale_ghost_event_takes_newer_ghosts_sid (agent_in_ghost_room: a newer room's event is ignored
# while LiveKit lists another sid under the name) and sidless_room_replaced_while_dispatching
# (unserved_room: a room_gone record yields to any room created after its own).
KNOWN_BUGS: dict[str, str] = {}


def test_every_scenario_is_named_with_what_it_caught() -> None:
    assert set(FAILED_BEFORE) == set(SCENARIOS)
    assert set(KNOWN_BUGS) <= set(SCENARIOS)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                name in KNOWN_BUGS,
                reason=f"known: {KNOWN_BUGS.get(name)}",
                raises=pytest.fail.Exception,
                strict=True,
            ),
        )
        for name in sorted(SCENARIOS)
    ],
)
def test_scenario_keeps_every_invariant(name: str) -> None:
    result = run_scenario(SCENARIOS[name]())
    if not result.ok:
        if name in KNOWN_BUGS:
            assert result.violation is not None and result.violation.kind == KNOWN_BUGS[name], result.report()
        pytest.fail(result.report(), pytrace=False)
