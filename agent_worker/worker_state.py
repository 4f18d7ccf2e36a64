"""One worker process's live state, read by the heartbeat, the health endpoint and the load function."""

from __future__ import annotations

from typing import Any

from livekit.agents import AgentServer

from agent_worker.nats_link import NatsLink
from agent_worker.options import WorkerOptions
from agent_worker.report_queue import ReportQueue
from shared.heartbeat_jobs import JobListSender
from shared.messages import PoolHeartbeat, utcnow


class WorkerState:
    def __init__(self, opts: WorkerOptions, server: AgentServer, queue: ReportQueue, link: NatsLink) -> None:
        self.opts = opts
        self._server = server
        self._queue = queue
        self._link = link
        self.draining = False
        self.started = False  # livekit-agents' job pool exists (before that, no jobs to count)
        self.livekit_worker_id: str | None = None
        self.job_list = JobListSender()  # the beats' job list: whole now and then, else what changed

    def active_dispatches(self) -> list[str]:
        if not self.started:
            return []
        return [info.job.dispatch_id or info.job.id for info in self._server.active_jobs]

    def pending_reports(self) -> int:
        return len(self._queue)

    def load(self) -> float:
        """Active jobs / capacity, what LiveKit sees too (not CPU: that crosses thresholds by accident)."""
        return min(1.0, len(self.active_dispatches()) / self.opts.capacity)

    def heartbeat(self, seq: int) -> PoolHeartbeat:
        jobs = self.active_dispatches()
        o = self.opts
        return PoolHeartbeat(
            pool=o.pool,
            agent=o.agent,
            region=o.region,
            agent_name=o.agent_name,
            worker=o.worker_id,
            capacity=o.capacity,
            active=len(jobs),
            load=min(1.0, len(jobs) / o.capacity),
            draining=self.draining,
            version=o.version,
            seq=seq,
            at=utcnow(),
            pending_reports=len(self._queue),
            **self.job_list.fields(seq, jobs),
        )

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready for jobs: registered with LiveKit and not draining."""
        serving, details = self.health()
        return serving and not self.draining, details

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(serving, details). Serving means registered with LiveKit; NATS trouble degrades, not fails."""
        serving = self.livekit_worker_id is not None
        details: dict[str, Any] = {
            "pool": self.opts.pool,
            "agent_name": self.opts.agent_name,
            "worker": self.opts.worker_id,
            "livekit": {"registered": serving, "worker_id": self.livekit_worker_id},
            "nats": {"state": "connected" if self._link.connected else self._link.state},
            "pending_reports": len(self._queue),
            "dropped_reports": self._queue.dropped,
            "active": len(self.active_dispatches()),
            "capacity": self.opts.capacity,
            "draining": self.draining,
            "version": self.opts.version,
        }
        if self._link.last_error and not self._link.connected:
            details["nats"]["error"] = self._link.last_error
        return serving, details
