"""Run one seed (or a scripted scenario) and report; run a campaign of seeds."""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import TextIO

from tests.sim.config import REMOVAL_BOUND_S
from tests.sim.invariants import Violation
from tests.sim.loop import Deadlock, drain
from tests.sim.scenario import Scenario
from tests.sim.steplog import StepLog
from tests.sim.subject import deterministic
from tests.sim.world import World, quiet_logging, restore_logging


@dataclass
class Result:
    seed: int
    scenario: Scenario
    violation: Violation | None
    steplog: StepLog
    virtual_s: float
    exceptions: Counter[str]
    tolerated: Counter[str]

    @property
    def ok(self) -> bool:
        return self.violation is None

    def report(self, full: bool = False) -> str:
        """The seed, its world and fault mix, what failed, and the interleaving (the failing
        rooms' lines and the last ones; ``full``: every line)."""
        v = self.violation
        head = [
            f"seed {self.seed}" + (f" ({self.scenario.name})" if self.scenario.name else ""),
            self.scenario.describe(),
            f"virtual time {self.virtual_s:.1f}s, {len(self.steplog)} steps logged",
        ]
        if self.exceptions:
            head.append("exceptions: " + ", ".join(f"{k} x{n}" for k, n in sorted(self.exceptions.items())))
        if self.tolerated:
            head.append("tolerated: " + ", ".join(f"{k} x{n}" for k, n in sorted(self.tolerated.items())))
        if v is None:
            head.append("result: ok")
        else:
            head.append(f"VIOLATION {v.kind}: {v.detail}")
        body = (
            self.steplog.render(tail=10**9, limit=10**9)
            if full
            else self.steplog.render(v.rooms if v else ())
        )
        what = f"--scenario {self.scenario.name}" if self.scenario.name else f"--seed {self.seed}"
        again = f"replay: .venv/bin/python -m tests.sim {what}"
        return "\n".join([*head, "interleaving:", body, again]).rstrip()


def run_scenario(
    scenario: Scenario, seed: int = 0, echo: bool = False, allow: frozenset[str] = frozenset()
) -> Result:
    world = World(scenario, seed, echo=echo, allow=allow)
    handler, saved = quiet_logging(world)
    violation: Violation | None = None
    try:
        # One draw kept from when retries took a generator of their own: every seed's world stays
        # the one the recorded campaigns ran.
        world.rng.getrandbits(64)
        with deterministic(seed):
            try:
                world.loop.run_until_complete(world.main())
            except Violation as exc:
                violation = exc
            except Deadlock as exc:
                violation = Violation("deadlock", str(exc))
            finally:
                world.stop()
                drain(world.loop)
                world.loop.close()
    finally:
        restore_logging(handler, saved)
    return Result(
        seed,
        scenario,
        violation,
        world.steplog,
        world.loop.time(),
        world.checks.exceptions,
        world.checks.tolerated,
    )


def run_seed(seed: int, echo: bool = False, allow: frozenset[str] = frozenset()) -> Result:
    return run_scenario(Scenario.draw(random.Random(f"scenario:{seed}")), seed, echo=echo, allow=allow)


def campaign(
    start: int,
    count: int,
    allow: frozenset[str] = frozenset(),
    out: TextIO = sys.stdout,
    every_s: float = 5.0,
    show: int = 3,
) -> Counter[str]:
    """Run seeds ``start`` .. ``start + count - 1``; print progress (seeds/s) and each violation
    as it is found (the first ``show`` of each kind with their interleaving, then one line).
    Returns violations per kind (the tolerated kinds, ``allow``, are counted and listed apart: a
    seed counts once per kind it tolerated)."""
    kinds: Counter[str] = Counter()
    examples: dict[str, list[int]] = {}
    tolerated: Counter[str] = Counter()
    tolerated_seeds: dict[str, list[int]] = {}
    began = last = time.perf_counter()
    print(
        f"campaign: seeds {start}..{start + count - 1}, double-agent bound {REMOVAL_BOUND_S:g}s"
        + (f", tolerating {', '.join(sorted(allow))}" if allow else ""),
        file=out,
        flush=True,
    )
    for i, seed in enumerate(range(start, start + count), 1):
        result = run_seed(seed, allow=allow)
        for kind in result.tolerated:
            tolerated[kind] += 1
            tolerated_seeds.setdefault(kind, []).append(seed)
        if result.violation is not None:
            kind = result.violation.kind
            kinds[kind] += 1
            examples.setdefault(kind, []).append(seed)
            if kinds[kind] <= show:
                print(f"\n===== {result.report()}\n", file=out, flush=True)
            else:
                print(f"seed {seed}: {kind}: {result.violation.detail.splitlines()[0]}", file=out, flush=True)
        now = time.perf_counter()
        if now - last >= every_s or i == count:
            last = now
            rate = i / (now - began)
            found = ", ".join(f"{k} {n}" for k, n in kinds.most_common()) or "none"
            allowed = ", ".join(f"{k} {n}" for k, n in tolerated.most_common())
            print(
                f"[{i}/{count}] {rate:.1f} seeds/s; violations: {found}"
                + (f"; tolerated: {allowed}" if allowed else ""),
                file=out,
                flush=True,
            )
    for kind, seeds in sorted(examples.items()):
        print(f"{kind}: {len(seeds)} seeds, e.g. {' '.join(map(str, seeds[:10]))}", file=out, flush=True)
    for kind, seeds in sorted(tolerated_seeds.items()):
        print(f"tolerated {kind}: {len(seeds)} seeds: {' '.join(map(str, seeds))}", file=out, flush=True)
    return kinds
