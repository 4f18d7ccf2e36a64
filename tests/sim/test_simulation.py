"""The fast suite: 1,500 seeds of the random campaign, the calm world, exact replay.

A failing seed fails the campaign test with the seed's report and interleaving
(``python -m tests.sim --seed N`` replays it step by step).
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from tests.sim.config import REMOVAL_BOUND_S
from tests.sim.loop import VirtualLoop
from tests.sim.runner import run_scenario, run_seed
from tests.sim.scenario import Scenario

# 1,500 since the replicas divide the rooms (a seed costs about a quarter more: partition watches,
# membership, reservations reports, every replica's resync); 2,000 before, in the same time.
SEEDS = range(0, 1500)

# Violation kinds tolerated (counted, not failed) while a known bug is open: none today. Issue 14's
# ghost rooms (agent_in_ghost_room, ghost_served, unserved_room, ended_while_listed, and seeds
# failing downstream of them) were counted here until the dispatch named its room's sid, the
# removal reported a ghost before deleting its evidence and the resync served a ghost a caller
# had joined.
KNOWN_BUG_KINDS: frozenset[str] = frozenset()
KNOWN_SEEDS: dict[int, str] = {}
# Seeds beyond the fast range that found a bug, replayed on every run (an interleaving drifts as the
# code changes, so these guard loosely; the campaign is the real net):
FOUND = {
    # An ambiguous CreateDispatch lands seconds late, after the room it was for was deleted and the
    # record forgot the attempt: LiveKit makes a ghost room for it, gives its job to no worker (so
    # no worker refuses it and deletes the room), and the ghost's room_started looked like a newer
    # room of the name. Fixed: a newer room of a known name holding a dispatch of ours made for
    # another sid, with no caller, is our ghost (Effects.ghost_of).
    6575: "agent_in_ghost_room",
    702148: "agent_in_ghost_room",
}


@pytest.mark.parametrize("seed", sorted(FOUND))
def test_seeds_that_found_a_bug_keep_every_invariant(seed: int) -> None:
    result = run_seed(seed)
    if result.violation is not None:
        pytest.fail(f"seed {seed} (found {FOUND[seed]}):\n{result.report()}", pytrace=False)


def test_random_seeds_keep_every_invariant() -> None:
    failed = []
    known: Counter[str] = Counter()
    began = time.perf_counter()
    for seed in SEEDS:
        result = run_seed(seed)
        if result.violation is None:
            continue
        kind = result.violation.kind
        if kind in KNOWN_BUG_KINDS or KNOWN_SEEDS.get(seed) == kind:
            known[kind] += 1
        else:
            failed.append(result)
    took = time.perf_counter() - began
    print(
        f"{len(SEEDS)} seeds in {took:.1f}s ({len(SEEDS) / took:.1f} seeds/s), {len(failed)} failed"
        + (f"; known bugs: {', '.join(f'{k} {n}' for k, n in known.most_common())}" if known else "")
    )
    if failed:
        others = ", ".join(f"{r.seed} ({r.violation.kind if r.violation else ''})" for r in failed[1:20])
        pytest.fail(
            f"{len(failed)} of {len(SEEDS)} seeds violated an invariant"
            + (f"; also {others}" if others else "")
            + f"\n\n{failed[0].report()}",
            pytrace=False,
        )


@pytest.mark.parametrize("seed", range(0, 100))
def test_a_calm_world_gets_every_room_served(seed: int) -> None:
    """No faults: every room of every shape gets its one agent (or is ignored, or ends cleanly).
    Guards the stand-ins as much as the controller."""
    result = run_scenario(Scenario.draw(random.Random(f"scenario:{seed}"), calm=True), seed)
    if not result.ok:
        pytest.fail(result.report(), pytrace=False)
    assert not result.exceptions, result.report()


@pytest.mark.parametrize("seed", [7, 38, 109])
def test_a_seed_replays_exactly(seed: int) -> None:
    """Same seed, same interleaving, line for line (also after other seeds ran in this process)."""
    first = run_seed(seed)
    run_seed(seed + 1)
    again = run_seed(seed)
    assert first.steplog.lines == again.steplog.lines
    assert len(first.steplog.lines) > 20


def test_the_loop_jumps_to_the_next_timer() -> None:
    import asyncio

    loop = VirtualLoop()
    seen: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        seen.append((name, loop.time()))

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sleeper("b", 3600.0))
            tg.create_task(sleeper("a", 0.5))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(10.0):
                await asyncio.sleep(20.0)

    began = time.perf_counter()
    loop.run_until_complete(main())
    loop.close()
    assert time.perf_counter() - began < 1.0
    assert seen == [("a", 0.5), ("b", 3600.0)]
    assert loop.time() == 3610.0


def test_the_double_agent_bound_fits_a_crashed_workers_ghosts() -> None:
    assert 20.0 < REMOVAL_BOUND_S < 30.0


def test_only_transient_failures_are_expected() -> None:
    """Invariant 3's judge is the consumer's own: what it retries forever is expected."""
    from orchestrator.livekit_gateway import LiveKitCallError
    from orchestrator.store import Conflict
    from tests.sim.scenario import RoomScript
    from tests.sim.world import World

    world = World(Scenario(replicas=1, pools=[], rooms=[RoomScript("room-1", at=1.0)], heal_at=1.0), 0)
    checks = world.checks
    checks.on_exception("r0", "RoomCreated room-1", TimeoutError("kv"))
    checks.on_exception("r0", "sweep", ExceptionGroup("g", [Conflict("room-1"), TimeoutError()]))
    checks.on_exception(
        "r0", "AgentStatus room-1 joined AD_1", LiveKitCallError("timeout", "t", permanent=False)
    )
    assert checks.violation is None
    checks.on_exception("r0", "RoomEnded room-1", ExceptionGroup("g", [TimeoutError(), KeyError("x")]))
    assert checks.violation is not None and checks.violation.kind == "unexpected_exception"
    assert checks.violation.rooms == ("room-1",)
    world.loop.close()
