"""The simulated world of one run: the loop, the stand-ins, the replicas, the script, the checks.

The script's rooms are incarnations (``RoomScript``): opened in LiveKit, announced by RoomCreated
(or not: a lost webhook; or after their RoomEnded), closed with RoomEnded (or not), perhaps deleted
while their dispatch is in flight; a ghost room CreateDispatch makes sends LiveKit's own webhooks.

A run has two phases. Until ``heal_at`` the script plays (rooms open and end, faults strike). Then
every fault is healed (outages end, crashed replicas and pools restart, partitions close, no new
faults) and the world runs until it is quiet — no message, call, job step or timer of the world
pending, and every room where it should be (invariant 2) — for ``STABLE_S``, or until
``SETTLE_MAX_S`` has passed; then invariant 2 is checked one last time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime

from orchestrator.records import IN_FLIGHT, RoomState
from orchestrator.room.resync import SETTLED_S
from shared.messages import PoolHeartbeat, ReservationsReport, RoomCreated, RoomEnded
from tests.sim.config import EPOCH, NOTIFY_LAG_S, ORCHESTRATOR, sim_config
from tests.sim.delivery import Delivery
from tests.sim.faults import Faults
from tests.sim.invariants import Checks, Violation
from tests.sim.kv import ResyncBucket, SimKV
from tests.sim.livekit import LkRoom, SimLiveKit
from tests.sim.loop import ACTOR, VirtualLoop
from tests.sim.members import Members
from tests.sim.pools import Workers
from tests.sim.replica import Replica
from tests.sim.scenario import Event, RoomScript, Scenario
from tests.sim.steplog import StepLog

# After healing: how long the world must stay quiet and right to call the run done, and how long
# it may take at most (every deadline chain of the config fits: attempts x (join + voice), leases,
# dispatch rounds, the no-pool deadline, JetStream's redelivery backoff).
STABLE_S = 3.0
SETTLE_MAX_S = 240.0
# Wrong and frozen (nothing pending, no record timer) this long — longer than the double-agent
# bound, for a controller that checks LiveKit on its sweeps, and than the resync's memory of a
# listed room it found covered (it reads that room's record again after SETTLED_S, and may then
# serve a room a stale end had ended) plus two passes — and the end check is final.
FROZEN_S = max(30.0, SETTLED_S + 2 * ORCHESTRATOR.resync_interval_s)
# Heartbeats reach the replicas this long after they are sent (core NATS).
BEAT_LAG_S = 0.005


class World:
    def __init__(
        self, scenario: Scenario, seed: int, echo: bool = False, allow: frozenset[str] = frozenset()
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.loop = VirtualLoop()
        self.rng = random.Random(f"world:{seed}")  # a stream of its own (the scenario has another)
        self.steplog = StepLog(self.loop.time, echo)
        self.faults = Faults(scenario.mix, random.Random(self.rng.getrandbits(64)), scenario.rules)
        self.config = sim_config(seed, len(scenario.pools))
        self.pending = 0  # one-shot world actions scheduled or in flight (0: the world is quiet)
        self.stopped = False
        self.checks = Checks(self, allow)
        self.kv = SimKV(self)
        self.livekit = SimLiveKit(self)
        self.delivery = Delivery(self, scenario.router)
        self.workers = Workers(self, scenario.pools)
        self.replicas: list[Replica] = []
        self._incarnations = [0] * scenario.replicas
        self.names: dict[str, None] = {}  # every room name the script opened, in order
        self.scripts: dict[str, RoomScript] = {}  # LiveKit sid -> the incarnation it is
        self._outages = {"kv_outage": 0, "lk_outage": 0}
        # Streams of their own, so the rest of a seed's world is what it was before these existed.
        self.life_rng = random.Random(f"lifecycle:{seed}")  # ghost rooms' webhooks lost or not
        self.resync_bucket = ResyncBucket(self, random.Random(f"resync:{seed}"))
        self.members = Members(self, random.Random(f"members:{seed}"))
        self.net = random.Random(f"net:{seed}")  # watches opened, reservations reports sent
        self._beats: dict[str, tuple[str, tuple[str, ...]]] = {}  # pool -> (worker, jobs) last beat
        self.loop.after_step = self.checks.after_step

    # -- plumbing ------------------------------------------------------------------------------------

    def log(self, actor: str, text: str) -> None:
        self.steplog.add(actor, text)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` in ``delay`` seconds; counted as pending until then."""
        self.pending += 1
        self.loop.call_later(delay, self._fire, fn)

    def _fire(self, fn: Callable[[], None]) -> None:
        self.pending -= 1
        if not self.stopped:
            fn()

    def wall(self) -> float:
        """The wall clock the code under test reads (unix seconds)."""
        return EPOCH + self.loop.time()

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(EPOCH + self.loop.time(), UTC)

    def ready_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.ready]

    def heartbeat(self, hb: PoolHeartbeat) -> None:
        jobs = (hb.worker, tuple(hb.jobs))
        changed = self._beats.get(hb.pool) != jobs
        self._beats[hb.pool] = jobs

        def arrive() -> None:
            now = self.loop.time()
            for replica in self.replicas:
                if replica.alive:
                    replica.registry.observe(hb, now)
                    if changed:
                        replica.touched()  # its jobs count in the replica's reservations report

        self.loop.call_later(BEAT_LAG_S, arrive)

    def touched(self, actor: str) -> None:
        """Something reached ``actor`` (a watch delivery, a KV answer) that may change its
        reservations report."""
        for replica in self.replicas:
            if replica.name == actor and replica.alive:
                replica.touched()

    def share_reservations(self, sender: Replica, report: ReservationsReport) -> None:
        """Core NATS: every replica subscribed (every live one, from its start) gets the report a
        moment later (one lag for all: one message fanned out); ``PeerReservations.on_report``
        ignores a replica's own. (``report`` as decoded from the wire: ``Replica`` encodes it.)"""
        to = [r for r in self.replicas if r is not sender and r.alive]
        if not to:
            return

        def arrive() -> None:
            for replica in to:
                if replica.alive and not self.stopped:
                    replica.ownership.peers.on_report(report)

        self.loop.call_later(self.net.uniform(*NOTIFY_LAG_S), arrive)

    # -- replicas ------------------------------------------------------------------------------------

    def start_replica(self, slot: int, phase: float = 0.0) -> None:
        self._incarnations[slot] += 1
        replica = Replica(self, slot, self._incarnations[slot], phase)
        self.replicas = [r for r in self.replicas if r.slot != slot] + [replica]
        self.replicas.sort(key=lambda r: r.slot)

    def replica_in(self, slot: int) -> Replica | None:
        return next((r for r in self.replicas if r.slot == slot and r.alive), None)

    # -- the script ----------------------------------------------------------------------------------

    def _open(self, room: RoomScript) -> None:
        lk_room, fresh = self.livekit.open_room(room.name, room.sid)
        self.names[room.name] = None
        if not fresh:
            # The name's ghost room (CreateDispatch made it) is still there: the user joins it, and
            # LiveKit sends no room_started (the room existed). It is this incarnation from now on.
            self.log("world", f"user opens {room.name}: joins its ghost room {lk_room.sid} (no room_started)")
            room.sid, room.joined_ghost = lk_room.sid, True
            self.scripts[room.sid] = room
            return
        self.log(
            "world",
            f"user opens {room.name} (sid {room.sid}{', events without sid' if room.sidless else ''})",
        )
        self.scripts[room.sid] = room
        if room.doomed is not None and not self.faults.healed:
            self.livekit.doom(room.name, room.sid, room.doomed)
        if room.ended_first:
            return  # published after its end
        if room.lost_created and not self.faults.healed:
            self.log("world", f"RoomCreated {room.name} {room.sid}: webhook LOST (never published)")
            return
        self._publish_created(room.name, None if room.sidless else room.sid, room.region, lk_room.created_at)
        if room.duplicate:
            self._publish_created(
                room.name, None if room.sidless else room.sid, room.region, lk_room.created_at
            )

    def _publish_created(self, name: str, sid: str | None, region: str | None, created_at: float) -> None:
        when = datetime.fromtimestamp(created_at, UTC)
        self.delivery.publish(RoomCreated(room=name, sid=sid, region=region, created_at=when))

    def _end(self, room: RoomScript) -> None:
        lk_room = self.livekit.rooms.get(room.name)
        if lk_room is None or lk_room.sid != room.sid:
            return  # already gone (deleted while its dispatch was in flight)
        self.log("world", f"{room.name} ends")
        self.close_incarnation(room.name, room.sid)

    def close_incarnation(self, name: str, sid: str) -> None:
        """The room ``name`` (sid ``sid``) closes in LiveKit; its RoomEnded goes out (or is lost)."""
        lk_room = self.livekit.close_room(name)
        if lk_room is None:
            return
        room = self.scripts.get(sid)
        if room is None:  # a ghost room: LiveKit's own webhook, with its sid
            lost = not self.faults.healed and self.life_rng.random() < self.scenario.lifecycle.lost_ended
            event = RoomEnded(room=name, sid=sid)
        else:
            lost = room.lost_ended and not self.faults.healed
            event = RoomEnded(room=name, sid=None if room.sidless else sid)
        if lost:
            self.log("world", f"RoomEnded {name} {sid}: webhook LOST (never published)")
        else:
            self.delivery.publish(event)
        if room is not None and room.ended_first:
            # Its RoomCreated only now, after its RoomEnded (another replica, a backlog).
            created = RoomCreated(
                room=name,
                sid=None if room.sidless else sid,
                region=room.region,
                created_at=datetime.fromtimestamp(lk_room.created_at, UTC),
            )
            delay = self.life_rng.uniform(0.05, 1.5)
            self.later(delay, lambda: self.delivery.publish(created))

    def ghost_opened(self, lk_room: LkRoom) -> None:
        """CreateDispatch made a room: LiveKit's room_started for it goes out like any other."""
        self.names[lk_room.name] = None
        if not self.faults.healed and self.life_rng.random() < self.scenario.lifecycle.lost_created:
            self.log("world", f"RoomCreated {lk_room.name} {lk_room.sid}: webhook LOST (never published)")
            return
        self._publish_created(lk_room.name, lk_room.sid, None, lk_room.created_at)

    def _strike(self, event: Event) -> None:
        if self.faults.healed:
            return
        what, target, duration = event.what, event.target, event.duration
        if what in ("crash_replica", "stop_replica"):
            replica = self.replica_in(int(target))
            if replica is None:
                return
            if what == "stop_replica":
                replica.stop()
            else:
                replica.crash()
            self.later(duration, lambda: self._restart_replica(int(target)))
        elif what == "crash_pool":
            pool = self.workers.pools[target]
            pool.crash()
            self.later(duration, lambda: None if self.faults.healed or pool.alive else pool.start())
        elif what == "partition_pool":
            pool = self.workers.pools[target]
            pool.partition(True)
            self.later(duration, lambda: pool.partition(False))
        elif what in ("kv_outage", "lk_outage"):
            self._outage(what, True)
            self.later(duration, lambda: self._outage(what, False))
        elif what == "lk_outage_long":
            self.log("world", f"LONG LiveKit outage for {duration:g}s: refused, then unanswered")
            self.faults.lk_down_mode = "refuse"
            self._outage("lk_outage", True)
            self.later(duration / 2, self._unanswered)
            self.later(duration, lambda: self._outage("lk_outage", False))

    def _unanswered(self) -> None:
        if not self.faults.healed:
            self.log("world", "LiveKit's API stops answering (calls time out)")
            self.faults.lk_down_mode = "drop"

    def _outage(self, what: str, down: bool) -> None:
        """Outage windows may overlap: the service is down while any of them lasts."""
        if self.faults.healed:
            return
        self._outages[what] += 1 if down else -1
        is_down = self._outages[what] > 0
        if what == "kv_outage":
            was, self.faults.kv_down = self.faults.kv_down, is_down
        else:
            was, self.faults.lk_down = self.faults.lk_down, is_down
        if was != is_down:
            name = "KV" if what == "kv_outage" else "LiveKit"
            self.log("world", f"{name} outage {'begins' if is_down else 'ends'}")
            self.checks.impairment_changed()
            if not is_down and what == "lk_outage":
                self.faults.lk_down_mode = "refuse"

    def _restart_replica(self, slot: int) -> None:
        if self.replica_in(slot) is None:
            self.start_replica(slot)

    def heal(self) -> None:
        self.log("world", "HEAL: faults off, outages over, everything restarted")
        self.faults.heal()
        self.livekit.doomed.clear()
        for slot in range(self.scenario.replicas):
            self._restart_replica(slot)
        self.workers.heal()
        self.checks.impairment_changed()

    # -- the run ------------------------------------------------------------------------------------

    async def main(self) -> None:
        ACTOR.set("world")
        sc = self.scenario
        self.log("world", f"seed {self.seed}")
        self.workers.start()
        phases = sc.phases or [0.0] * sc.replicas
        for slot in range(sc.replicas):
            self.start_replica(slot, phases[slot] if slot < len(phases) else 0.0)
        for room in sc.rooms:
            self.later(room.at, lambda room=room: self._open(room))  # type: ignore[misc]
            if room.end_at is not None:
                self.later(room.end_at, lambda room=room: self._end(room))  # type: ignore[misc]
        for event in sc.timeline:
            self.later(event.at, lambda event=event: self._strike(event))  # type: ignore[misc]
        await asyncio.sleep(sc.heal_at)
        self.heal()
        await self._settle()

    async def _settle(self) -> None:
        started = self.loop.time()
        quiet_since: float | None = None
        frozen_since: float | None = None
        passes: dict[str, int] = {}
        while self.loop.time() - started < SETTLE_MAX_S:
            await asyncio.sleep(1.0)
            now = self.loop.time()
            if self.pending:
                quiet_since = frozen_since = None
                continue
            if not self.checks.final_problems():
                quiet_since = quiet_since if quiet_since is not None else now
                if now - quiet_since >= STABLE_S:
                    self.log("world", "settled: every room where it should be")
                    return
                continue
            quiet_since = None
            # Wrong, and nothing left that could change it: no message, call or job step pending,
            # no record with a timer or a step in flight, and every replica's resync has listed
            # LiveKit's rooms twice since (each passes over its own partitions). Waiting longer
            # would only cost time.
            if self._has_timers(now):
                frozen_since = None
            else:
                done = self.resync_bucket.passes
                if frozen_since is None:
                    frozen_since, passes = now, dict(done)
                live = [r.name for r in self.replicas if r.alive]
                if now - frozen_since >= FROZEN_S and all(
                    done.get(name, 0) - passes.get(name, 0) >= 2 for name in live
                ):
                    break
        problems = self.checks.final_problems()
        if not problems:
            raise Violation(
                "never_quiet", f"world still busy {SETTLE_MAX_S:g}s after healing ({self.pending} pending)"
            )
        for kind, room, detail in problems:
            self.checks.fail(kind, f"{room}: {detail}", room)
        if self.checks.violation is not None:
            raise self.checks.violation

    def _has_timers(self, now: float) -> bool:
        wall = self.wall()
        for room in self.kv.rooms():
            rec = self.kv.peek(room)
            if rec is None or rec.terminal:
                continue
            if rec.state in IN_FLIGHT or rec.state == RoomState.WAITING_FOR_POOL:
                return True
            if rec.deadline is not None or (rec.lease_until or 0) > wall:
                return True
        return False

    def stop(self) -> None:
        self.stopped = True


def quiet_logging(world: World) -> tuple[logging.Handler, list[tuple[logging.Logger, int, bool]]]:
    """Route the code under test's log lines (INFO and up) into the interleaving, not to stderr or
    pytest's capture; returns what :func:`restore_logging` puts back."""

    class ToSteps(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                msg = record.getMessage()
            except Exception:  # a bad format string must not stop the run
                msg = str(record.msg)
            room = getattr(record, "room", None)
            if isinstance(room, str) and room not in msg:
                msg = f"{msg} [{room}]"
            world.log(ACTOR.get(), f"log {record.levelname.lower()}: {msg}")
            # A traceback in the log is an error the code under test caught and only logged (the
            # rewrite's sweep does that for one room's failure): judged like a handler's.
            if record.exc_info and record.exc_info[1] is not None:
                where = f"logged by {record.name}"
                world.checks.on_exception(
                    ACTOR.get(), where, record.exc_info[1], room if isinstance(room, str) else ""
                )

    handler = ToSteps(logging.INFO)
    saved = []
    for name, level in (("orchestrator", logging.INFO), ("shared", logging.INFO)):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(level)
        logger.propagate = False
        logger.addHandler(handler)
    return handler, saved


def restore_logging(handler: logging.Handler, saved: list[tuple[logging.Logger, int, bool]]) -> None:
    for logger, level, propagate in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
