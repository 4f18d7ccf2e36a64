"""CreateDispatch with bounded retries, each attempt a span, and no double dispatch on retry.

Transient failures (unreachable, timeout, 5xx, rate limiting) are retried with exponential backoff
and jitter (stamina) under an overall deadline; permanent ones (credentials, invalid argument, not
found) end at once. CreateDispatch is not idempotent: after an *ambiguous* failure (a timeout, a
dropped connection, any 5xx: the request may have landed) every later try first looks for our
attempt's key in ``list_dispatch``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import stamina
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from orchestrator.livekit_gateway import LiveKitCallError, LiveKitGateway
from orchestrator.metrics import OrchestratorMetrics

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("switchboard.dispatcher")


@dataclass(frozen=True, slots=True)
class DispatchResult:
    dispatch_id: str
    tries: int
    found_existing: bool


def _transient(exc: Exception) -> bool:
    # Permanent (unauthenticated, invalid_argument, not_found): the same request gets the same answer.
    return isinstance(exc, LiveKitCallError) and not exc.permanent


async def create_dispatch(
    gateway: LiveKitGateway,
    *,
    room: str,
    agent_name: str,
    metadata: Callable[[], str],
    key: str,
    deadline_s: float,
    attributes: dict[str, str | int] | None = None,
    metrics: OrchestratorMetrics | None = None,
    maybe_landed: bool = False,
) -> DispatchResult:
    """Dispatch ``agent_name`` to ``room``; raises :class:`LiveKitCallError` when it cannot.

    ``metadata`` builds the dispatch metadata (with the current trace context) for each try.
    ``maybe_landed``: an earlier step (another replica, an earlier round) may have dispatched this
    attempt already; every try looks for it first, inside the same retry budget.
    """
    tries = 0
    async for attempt in stamina.retry_context(
        on=_transient, attempts=None, timeout=deadline_s, wait_initial=0.1, wait_max=1.0, wait_jitter=0.2
    ):
        with attempt:
            tries += 1
            if tries > 1 and metrics is not None:
                metrics.retries.add(1)
            started = time.perf_counter()
            with _tracer.start_as_current_span(
                "CreateDispatch",
                kind=SpanKind.CLIENT,
                attributes={
                    **(attributes or {}),
                    "rpc.system": "twirp",
                    "rpc.service": "livekit.AgentDispatchService",
                    "rpc.method": "CreateDispatch",
                    "switchboard.try": tries,
                },
            ) as span:
                try:
                    if maybe_landed:
                        existing = await gateway.find_dispatch(room, agent_name, key)
                        if existing:
                            span.set_attribute("switchboard.dispatch_id", existing)
                            span.add_event("found dispatch from an earlier ambiguous try")
                            return DispatchResult(existing, tries, True)
                    # Built inside this try's span: the worker's job span becomes its child.
                    dispatch_id = await gateway.create_dispatch(room, agent_name, metadata())
                except LiveKitCallError as err:
                    if metrics is not None:
                        metrics.create_dispatch_duration.record(
                            time.perf_counter() - started, {"outcome": "error", "error.type": err.reason}
                        )
                    # Sticky: once a try may have landed, every later try must look first.
                    maybe_landed = maybe_landed or err.ambiguous
                    span.set_status(Status(StatusCode.ERROR, str(err)))
                    span.set_attribute("error.type", err.reason)
                    log.warning("CreateDispatch try %d failed: %s", tries, err, extra={"reason": err.reason})
                    raise
                span.set_attribute("switchboard.dispatch_id", dispatch_id)
                if metrics is not None:
                    metrics.create_dispatch_duration.record(time.perf_counter() - started, {"outcome": "ok"})
                return DispatchResult(dispatch_id, tries, False)
    raise AssertionError("unreachable: stamina either returns or raises")
