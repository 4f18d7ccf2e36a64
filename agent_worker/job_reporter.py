"""Build a job's AgentStatus reports and send them, with the job span's trace context, to the worker."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from opentelemetry import trace

from agent_worker.report_channel import JobReport, ReportClient
from shared.messages import AgentState, AgentStatus, utcnow
from shared.tracecontext import inject_headers

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 1024


@dataclass(frozen=True)
class JobFacts:
    room: str
    dispatch_id: str
    attempt: int
    pool: str
    worker: str
    warnings: tuple[str, ...] = ()
    # The region whose status stream takes this job's reports (per-region state); None: shared.
    state_region: str | None = None


class JobReporter:
    def __init__(self, client: ReportClient, facts: JobFacts, span: trace.Span) -> None:
        self._client = client
        self._facts = facts
        self._span = span
        self.identity: str | None = None
        # The job's phases on this worker's clock, sent with ``joined`` (AgentStatus).
        self.started_at = utcnow()
        self.connected_at: datetime | None = None

    def connected(self) -> None:
        self.connected_at = utcnow()
        self._span.add_event("room connected")

    def status(self, state: AgentState, reason: str | None = None) -> AgentStatus:
        f = self._facts
        return AgentStatus(
            room=f.room,
            dispatch_id=f.dispatch_id,
            attempt=f.attempt,
            pool=f.pool,
            worker=f.worker,
            state=state,
            at=utcnow(),
            identity=self.identity,
            reason=reason[:MAX_REASON_CHARS] if reason else None,
            warnings=list(f.warnings),
            started_at=self.started_at if state == "joined" else None,
            connected_at=self.connected_at if state == "joined" else None,
        )

    async def report(self, state: AgentState, reason: str | None = None) -> None:
        status = self.status(state, reason)
        self._span.add_event(f"agent {state}", {"reason": reason} if reason else None)
        carrier = inject_headers({}, trace.set_span_in_context(self._span))
        log.info("agent %s%s", state, f" ({reason})" if reason else "", extra={"state": state})
        try:
            await self._client.send(
                JobReport(status=status, trace=carrier, state_region=self._facts.state_region)
            )
        except (OSError, TimeoutError) as exc:
            # The worker process is going away; nothing else can carry the report.
            log.error("could not hand the %s report to the worker: %s", state, exc)

    async def aclose(self) -> None:
        await self._client.aclose()
