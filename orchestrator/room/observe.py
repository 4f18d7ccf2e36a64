"""Telemetry for room steps, in one place: spans, the log line of a state change, the metrics.

Decisions stay pure; the reconciler and the effects executor call these around them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from orchestrator.metrics import OrchestratorMetrics
from orchestrator.records import RoomRecord, RoomState
from orchestrator.scheduler import Decision
from shared.logs import log_context
from shared.tracecontext import extract_from, inject_into

log = logging.getLogger("orchestrator.room")
_tracer = trace.get_tracer("switchboard.orchestrator")
S = RoomState
MAX_REJECTION_EVENTS = 20


def span_attrs(rec: RoomRecord) -> dict[str, str | int]:
    attrs: dict[str, str | int] = {
        "switchboard.room": rec.room,
        "switchboard.attempt": rec.attempt,
        "switchboard.state": rec.state.value,
    }
    if rec.pool:
        attrs["switchboard.pool"] = rec.pool
    if rec.home_region:
        attrs["switchboard.region"] = rec.home_region
    if rec.dispatch_id:
        attrs["switchboard.dispatch_id"] = rec.dispatch_id
    return attrs


def trace_fields() -> dict[str, str | None]:
    """The current trace context, kept in a new record so every later span joins the room's trace."""
    carrier: dict[str, Any] = inject_into({})
    return {"traceparent": carrier.get("traceparent"), "tracestate": carrier.get("tracestate") or None}


@contextmanager
def room_span(name: str, rec: RoomRecord) -> Iterator[Span]:
    """A span of the room's trace: a child of the current span (a message being handled), or of
    the span recorded in the room's record when there is none (a sweep)."""
    parent = None
    if not trace.get_current_span().get_span_context().is_valid and rec.traceparent:
        parent = extract_from({"traceparent": rec.traceparent, "tracestate": rec.tracestate or ""})
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.INTERNAL, attributes=span_attrs(rec)
    ) as span:
        yield span


@contextmanager
def call_span(name: str, rec: RoomRecord, tries: int) -> Iterator[Span]:
    """One try of a LiveKit call (CreateDispatch), a client span."""
    with _tracer.start_as_current_span(
        name,
        kind=SpanKind.CLIENT,
        attributes={
            **span_attrs(rec),
            "rpc.system": "twirp",
            "rpc.service": "livekit.AgentDispatchService",
            "rpc.method": name,
            "switchboard.try": tries,
        },
    ) as span:
        yield span


def call_failed(span: Span, reason: str, message: str) -> None:
    span.set_status(Status(StatusCode.ERROR, message))
    span.set_attribute("error.type", reason)


def scheduled(span: Span, decision: Decision) -> None:
    span.set_attribute("switchboard.decision.pool", decision.pool or "")
    span.set_attribute("switchboard.decision.candidates", len(decision.candidates))
    span.set_attribute("switchboard.decision.reason", decision.reason)
    span.set_attribute("switchboard.decision.rejected", len(decision.rejections))
    # One event per rejected pool, capped: the full list is in the room's history.
    for pool, why in list(decision.rejections.items())[:MAX_REJECTION_EVENTS]:
        span.add_event("rejected", {"switchboard.pool": pool, "switchboard.reason": why})


class Observer:
    def __init__(self, metrics: OrchestratorMetrics | None) -> None:
        self.metrics = metrics

    def committed(self, old: RoomRecord, new: RoomRecord, now: float) -> None:
        """A write landed: one log line and the room's metrics when its state changed."""
        if old.state == new.state:
            return
        last = new.history[-1] if new.history else None
        with log_context(room=new.room, pool=new.pool, attempt=new.attempt, dispatch_id=new.dispatch_id):
            log.info(
                "room %s: %s -> %s (%s)",
                new.room,
                old.state.value,
                new.state.value,
                last.detail if last else "",
                extra={"state": new.state.value, "event": last.event if last else ""},
            )
        if self.metrics is None:
            return
        m = self.metrics
        since = now - new.received_at
        attrs: dict[str, str | bool] = {
            "switchboard.pool": new.pool or "",
            "switchboard.first_attempt": new.attempt <= 1,
        }
        if new.state == S.DISPATCHED:
            m.dispatches.add(1, {"outcome": "ok"})
            m.time_to_dispatch.record(since, attrs)
        elif new.state == S.JOINED:
            m.time_to_joined.record(since, attrs)
        elif new.state == S.SPEAKING:
            if new.joined_at == new.voice_at:
                m.time_to_joined.record(since, attrs)
            m.time_to_voice.record(since, attrs)
        elif new.state == S.REDISPATCHING:
            m.redispatches.add(1, {"cause": new.reason or "unknown"})
        elif new.state == S.FAILED:
            m.dispatches.add(1, {"outcome": "failed", "reason": new.reason or "unknown"})

    def reconciled(self, action: str) -> None:
        """The resync acted on a room: ``found`` (its event never came), ``ended``, ``agent_lost``."""
        if self.metrics is not None:
            self.metrics.resync_rooms.add(1, {"action": action})

    def resync_pass(self, seconds: float, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.resync_passes.add(1, {"outcome": outcome})
            self.metrics.resync_duration.record(seconds)

    def call(self, seconds: float, outcome: str, reason: str | None = None, *, retry: bool = False) -> None:
        if self.metrics is None:
            return
        if retry:
            self.metrics.retries.add(1)
        attrs = {"outcome": outcome} if reason is None else {"outcome": outcome, "error.type": reason}
        self.metrics.create_dispatch_duration.record(seconds, attrs)
