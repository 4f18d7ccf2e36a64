"""The named regression scenarios (tests/sim/regressions.py): scripted sequences the controller
before orchestrator/room/ got wrong (issue 13's sequences 1, 2, 3 and 5, and those the simulator
found), each failing on that code with the violation named below and kept by the reconciler.
``python -m tests.sim --scenario NAME`` replays one step by step."""

from __future__ import annotations

import pytest

from tests.sim.regressions import SCENARIOS
from tests.sim.runner import run_scenario

# What each scenario ended in on the controller it was written against (orchestrator/controller.py,
# removed in favour of orchestrator/room/); the reconciler keeps every invariant in all of them.
FAILED_BEFORE = {
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
}


def test_every_scenario_is_named_with_what_it_caught() -> None:
    assert set(FAILED_BEFORE) == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_keeps_every_invariant(name: str) -> None:
    result = run_scenario(SCENARIOS[name]())
    if not result.ok:
        pytest.fail(result.report(), pytrace=False)
