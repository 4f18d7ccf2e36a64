"""One room step's effect run on its own, for unit tests: the effects executor with a real clock,
a seeded random source and a lease that never needs renewing."""

from __future__ import annotations

import random
import time
from typing import cast

from orchestrator.metrics import OrchestratorMetrics
from orchestrator.records import RoomRecord, RoomState
from orchestrator.room.effects import Effects, RetryPolicy
from orchestrator.room.facts import Outcome
from orchestrator.room.lease import Lease
from orchestrator.room.observe import Observer
from orchestrator.room.ports import LiveKit, RecordStore
from orchestrator.room.step import EnsureDispatch
from orchestrator.store import Versioned


def effects_on(livekit: object, metrics: OrchestratorMetrics | None = None) -> Effects:
    """The effects executor over ``livekit`` (a stand-in of the gateway)."""
    return Effects(
        cast(LiveKit, livekit),
        mono=time.monotonic,
        rng=random.Random(1),
        retry=RetryPolicy(deadline_s=10.0, wait_initial_s=0.01),
        region_of=lambda _pool: "eu-central",
        observer=Observer(metrics),
    )


async def run_dispatch(livekit: object, metrics: OrchestratorMetrics | None = None) -> Outcome:
    """EnsureDispatch for a fresh claim (no look first) of room ``ornina-1``, attempt 1."""
    rec = RoomRecord(
        room="ornina-1",
        state=RoomState.DISPATCHING,
        agent="ornina-avatar-agent",
        home_region="eu-central",
        attempt=1,
        pool="eu-central-a",
        agent_name="ornina-avatar-agent.eu-central-a",
        dispatch_key="ornina-1/1",
        lease_until=time.time() + 300,
    )
    effects = effects_on(livekit, metrics)
    lease = Lease(Versioned(rec, 1), cast(RecordStore, None), time.time, 300.0, lambda v: v)
    return await effects.run(EnsureDispatch("ornina-1/1", look_first=False), rec, lease)
