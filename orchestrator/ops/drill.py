"""`switchboard drill kill-pool POOL`: kill a pool and time how every affected room recovers.

Affected rooms are those the KV records place on the pool with an agent in (or on its way into)
the room: dispatched, joined, speaking. The pool is killed as a crash would kill it — in `dev` by
SIGKILL to its worker process groups (a :data:`PoolKiller` made from the dev state file),
elsewhere by a ``PoolCommand exit`` on the pool's control subject (workers obey only with
``worker.allow_remote_kill``). Then each room is watched in KV until it speaks again on another
dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from orchestrator.ops.recovery import phase_durations, recovery_marks
from orchestrator.ops.rooms import read_rooms, room_store
from orchestrator.ops.watch import room_watcher, watch_until
from orchestrator.records import HOLDING, RoomRecord, RoomState
from shared import subjects
from shared.codec import encode
from shared.control import PoolCommand


@dataclass(frozen=True, slots=True)
class RoomRecovery:
    room: str
    recovered_s: float | None  # None: not speaking again within the deadline
    new_pool: str | None
    attempt: int
    last_state: str
    # Each phase of the recovery in seconds (orchestrator.ops.recovery), None where not reached.
    phases: tuple[tuple[str, float | None], ...] = ()


@dataclass(frozen=True, slots=True)
class DrillReport:
    pool: str
    method: str
    rooms: list[RoomRecovery]

    @property
    def recovered(self) -> list[RoomRecovery]:
        return [r for r in self.rooms if r.recovered_s is not None]

    @property
    def missing(self) -> list[RoomRecovery]:
        return [r for r in self.rooms if r.recovered_s is None]

    def p50(self) -> float | None:
        times = [r.recovered_s for r in self.recovered if r.recovered_s is not None]
        return statistics.median(times) if times else None

    def max(self) -> float | None:
        times = [r.recovered_s for r in self.recovered if r.recovered_s is not None]
        return max(times) if times else None


class NothingToDrill(RuntimeError):
    pass


# Kills a pool's processes directly, as a crash would, and says how ("SIGKILL to 2 process groups").
# `switchboard dev` supplies one from its state file; without one the pool is told over NATS.
PoolKiller = Callable[[str], str]


def affected_rooms(records: list[RoomRecord], pool: str) -> list[RoomRecord]:
    return [r for r in records if r.pool == pool and r.state in HOLDING]


async def kill_pool_drill(
    nc: NATS, pool: str, *, kill: PoolKiller | None, deadline_s: float = 60.0
) -> DrillReport:
    subject = subjects.pool_control(pool)  # validates the pool id
    js = nc.jetstream()
    store = await room_store(js)
    rooms = affected_rooms(await read_rooms(js), pool) if store else []
    if store is None or not rooms:
        raise NothingToDrill(f"no room has an agent on pool {pool} (dispatched, joined or speaking)")
    started = time.time()
    # Watch first, kill second: no transition can slip between the two.
    async with contextlib.AsyncExitStack() as stack:
        watchers = {r.room: await stack.enter_async_context(room_watcher(store.kv, r.room)) for r in rooms}
        if kill is not None:
            method = kill(pool)
        else:
            command = PoolCommand(command="exit", reason="switchboard drill kill-pool")
            await nc.publish(subject, encode(command))
            await nc.flush(timeout=5)
            method = "PoolCommand exit over NATS"
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_await_recovery(watchers[r.room], r, started, deadline_s)) for r in rooms]
    return DrillReport(pool, method, [t.result() for t in tasks])


async def _await_recovery(
    watcher: KeyValue.KeyWatcher, before: RoomRecord, started: float, deadline_s: float
) -> RoomRecovery:
    watched = await watch_until(
        watcher, lambda r: r.state == RoomState.SPEAKING and r.attempt > before.attempt, deadline_s
    )
    latest = watched.record or before
    phases = tuple(phase_durations(recovery_marks(latest, started)))
    if watched.reached:
        at = latest.voice_at or time.time()
        return RoomRecovery(
            before.room, max(0.0, at - started), latest.pool, latest.attempt, "speaking", phases
        )
    return RoomRecovery(before.room, None, latest.pool, latest.attempt, latest.state.value, phases)
