"""The worker pools, simulated: one worker process per pool, its jobs, its heartbeats, its reports.

As the real worker (agent_worker/): it heartbeats every interval with the dispatch ids of its jobs;
a job's agent joins the room (a participant in the LiveKit stand-in), the worker reports
``joined``, then ``voice`` once it is heard; an agent removed from the room (or whose room is
deleted) ends its job and reports ``left``; a failing agent reports ``error`` and leaves. Reports
travel over JetStream (the delivery queue); while the pool's NATS link is down they are held and
sent on reconnect, and a crash loses the ones held.

Faults: a crash (no more beats; the agents stay in LiveKit as ghosts for a while, no report), a
restart (a new worker id), a NATS partition (no beats, reports held, the agents carry on), late
jobs, dispatches LiveKit gives no job, agents that never speak or fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.dispatch_metadata import read_dispatch_metadata
from shared.messages import AgentState, AgentStatus, PoolHeartbeat
from shared.subjects import pool_agent_name
from tests.sim.config import AGENT, EPOCH, ORCHESTRATOR
from tests.sim.faults import Call

if TYPE_CHECKING:
    from tests.sim.livekit import Dispatch
    from tests.sim.world import World


@dataclass(eq=False, slots=True)
class Job:
    id: str
    dispatch_id: str
    room: str
    attempt: int
    pool: SimPool
    incarnation: int
    room_sid: str  # the room (incarnation) of its dispatch
    intended_sid: str | None = None  # the room the dispatch was made for (its metadata's sid)
    state: str = "starting"  # starting | in_room | ended

    @property
    def identity(self) -> str:
        return f"agent-{self.id}"


class SimPool:
    def __init__(self, world: World, pool_id: str, region: str, capacity: int) -> None:
        self.world = world
        self.id = pool_id
        self.region = region
        self.capacity = capacity
        self.agent_name = pool_agent_name(AGENT, pool_id)
        self.alive = False
        self.linked = True
        self.incarnation = 0
        self.jobs: dict[str, Job] = {}
        self.held: list[AgentStatus] = []
        self._seq = 0
        self._beat_cache: tuple[tuple[str, ...], PoolHeartbeat] | None = None
        self.actor = f"pool {pool_id}"

    @property
    def worker(self) -> str:
        return f"{self.id}-w{self.incarnation}"

    # -- process lifecycle -------------------------------------------------------------------------

    def start(self, phase: float = 0.0) -> None:
        self.alive = True
        self.incarnation += 1
        self._beat_cache = None
        self.world.log(self.actor, f"worker {self.worker} up (capacity {self.capacity})")
        self.world.loop.call_later(phase, self._beat, self.incarnation)

    def crash(self) -> None:
        if not self.alive:
            return
        self.alive = False
        lost = len(self.held)
        self.held.clear()
        for job in self.jobs.values():
            if job.state == "in_room":
                self.world.livekit.ghost(job)
            job.state = "ended"
        self.jobs.clear()
        self.world.log(self.actor, f"CRASH worker {self.worker} ({lost} held reports lost)")

    def partition(self, down: bool) -> None:
        """The worker's NATS link: down = no beats, reports held (LiveKit does not notice)."""
        if down == (not self.linked):
            return
        self.linked = not down
        self.world.log(self.actor, "NATS link down" if down else "NATS link back")
        if self.linked:
            held, self.held = self.held, []
            for status in held:
                self.world.delivery.publish(status)

    def _beat(self, incarnation: int) -> None:
        if self.world.stopped or not self.alive or incarnation != self.incarnation:
            return
        if self.linked:
            self.world.heartbeat(self._heartbeat())
        self.world.loop.call_later(ORCHESTRATOR.heartbeat_interval_s, self._beat, incarnation)

    def _heartbeat(self) -> PoolHeartbeat:
        jobs = tuple(j.dispatch_id for j in self.jobs.values())
        if self._beat_cache is not None and self._beat_cache[0] == jobs:
            return self._beat_cache[1]
        self._seq += 1
        hb = PoolHeartbeat.model_construct(
            pool=self.id,
            agent=AGENT,
            region=self.region,
            agent_name=self.agent_name,
            worker=self.worker,
            capacity=self.capacity,
            active=len(jobs),
            load=min(1.0, len(jobs) / self.capacity),
            draining=False,
            version="sim",
            seq=self._seq,
            at=datetime.fromtimestamp(EPOCH + self.world.loop.time(), UTC),
            pending_reports=len(self.held),
            jobs=list(jobs),
        )
        self._beat_cache = (jobs, hb)
        return hb

    # -- jobs --------------------------------------------------------------------------------------

    def can_take(self) -> bool:
        return self.alive and len(self.jobs) < self.capacity

    def take(self, dispatch: Dispatch, attempt: int, job_id: str) -> Job:
        info = read_dispatch_metadata(dispatch.metadata).info
        job = Job(
            job_id,
            dispatch.id,
            dispatch.room,
            attempt,
            self,
            self.incarnation,
            dispatch.room_sid,
            info.sid if info is not None else None,
        )
        self.jobs[job.id] = job
        self.world.livekit.jobs[job.id] = job
        self.world.log(self.actor, f"job {job.id} for {dispatch.id} in {dispatch.room} (attempt {attempt})")
        plan = self.world.faults.job(Call("job", "join", job.room, self.actor, "", None, attempt))
        self.world.later(plan.delay, lambda: self._join(job))
        return job

    def _runs(self, job: Job) -> bool:
        return self.alive and job.incarnation == self.incarnation and job.id in self.jobs

    def _join(self, job: Job) -> None:
        if not self._runs(job) or job.state != "starting":
            return
        if job.intended_sid and job.intended_sid != job.room_sid:
            # agent_worker/job.py dispatch_listed: a dispatch that landed in a room made for it
            # after its own room ended; the worker deletes that room when no caller is in it.
            self.world.log(
                self.actor,
                f"job {job.id} refused: its dispatch is for {job.intended_sid}, the room is {job.room_sid}",
            )
            self.world.livekit.delete_if_uncalled(job.room, job.room_sid)
            self._end(job, "left", "dispatch withdrawn")
            return
        if not self.world.livekit.join(job):
            self._end(job, "left", "could not connect: the room is gone")
            return
        job.state = "in_room"
        self._report(job, "joined")
        plan = self.world.faults.job(Call("job", "voice", job.room, self.actor, "", None, job.attempt))
        if plan.outcome == "mute":
            self.world.log(self.actor, f"{job.identity} in {job.room} will never be heard (FAULT mute)")
            return
        self.world.later(plan.delay, lambda: self._voice(job, plan.outcome))

    def _voice(self, job: Job, outcome: str) -> None:
        if not self._runs(job) or job.state != "in_room":
            return
        if outcome == "error":
            self._report(job, "error", "agent entrypoint failed: SimulatedError (FAULT)")
            self._end(job, "left", "job ended after an error")
            self.world.livekit.leave(job)
            return
        self._report(job, "voice")

    def agent_gone(self, job: Job, reason: str) -> None:
        """LiveKit removed the agent (RemoveParticipant, room deleted): its job ends."""
        if self._runs(job):
            self._end(job, "left", reason)

    def _end(self, job: Job, state: AgentState, reason: str) -> None:
        self.jobs.pop(job.id, None)
        joined = job.state == "in_room"
        job.state = "ended"
        self._report(job, state, reason, identity=joined)

    def _report(self, job: Job, state: AgentState, reason: str | None = None, identity: bool = True) -> None:
        status = AgentStatus(
            room=job.room,
            dispatch_id=job.dispatch_id,
            attempt=job.attempt,
            pool=self.id,
            worker=self.worker,
            state=state,
            at=datetime.fromtimestamp(EPOCH + self.world.loop.time(), UTC),
            identity=job.identity if identity else None,
            reason=reason,
        )
        if self.linked:
            self.world.delivery.publish(status)
        else:
            self.held.append(status)
            self.world.log(self.actor, f"report {state} {job.room} {job.dispatch_id} held (NATS down)")


class Workers:
    """All the pools, and LiveKit's side of them: which worker a dispatch's job goes to."""

    def __init__(self, world: World, pools: list[tuple[str, str, int]]) -> None:
        self.world = world
        self.pools = {pid: SimPool(world, pid, region, cap) for pid, region, cap in pools}
        self.by_agent_name = {p.agent_name: p for p in self.pools.values()}
        self._jobs = 0

    def start(self) -> None:
        for i, pool in enumerate(self.pools.values()):
            pool.start(phase=0.1 + 0.3 * i)

    def heal(self) -> None:
        for pool in self.pools.values():
            if not pool.alive:
                pool.start()
            pool.partition(False)

    def assign(self, dispatch: Dispatch, attempt: int) -> None:
        """LiveKit hands the new dispatch to a worker registered under its agent_name (or to none)."""
        world = self.world
        plan = world.faults.job(Call("job", "assign", dispatch.room, "livekit", "", None, attempt))
        if plan.outcome == "none":
            world.log("livekit", f"dispatch {dispatch.id} gets no job (FAULT: no worker took it)")
            return

        def assign() -> None:
            pool = self.by_agent_name.get(dispatch.agent_name)
            if dispatch.deleted:
                world.log("livekit", f"dispatch {dispatch.id} deleted before a worker took it")
            elif pool is None or not pool.can_take():
                world.log("livekit", f"dispatch {dispatch.id}: no available worker of {dispatch.agent_name}")
            else:
                self._jobs += 1
                job = pool.take(dispatch, attempt, f"J{self._jobs}")
                dispatch.jobs.append(job.id)

        world.later(plan.delay, assign)
