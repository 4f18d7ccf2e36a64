"""CreateDispatch with bounded retries, each attempt a span, and no double dispatch on retry.

Transient failures (unreachable, timeout, 5xx) are retried with exponential backoff and jitter
(stamina) under an overall deadline; permanent ones (credentials, invalid argument) end at once.
CreateDispatch is not idempotent: after an *ambiguous* failure (the request may have landed) the
next attempt first looks for our attempt's key in ``list_dispatch``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import stamina
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from orchestrator.livekit_gateway import LiveKitCallError, LiveKitGateway

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("switchboard.dispatcher")


@dataclass(frozen=True, slots=True)
class DispatchResult:
    dispatch_id: str
    tries: int
    found_existing: bool


def _transient(exc: Exception) -> bool:
    return isinstance(exc, LiveKitCallError) and not exc.permanent


async def create_dispatch(
    gateway: LiveKitGateway,
    *,
    room: str,
    agent_name: str,
    metadata: str,
    key: str,
    deadline_s: float,
    attributes: dict[str, str | int] | None = None,
) -> DispatchResult:
    """Dispatch ``agent_name`` to ``room``; raises :class:`LiveKitCallError` when it cannot."""
    tries = 0
    maybe_landed = False
    async for attempt in stamina.retry_context(
        on=_transient, attempts=None, timeout=deadline_s, wait_initial=0.1, wait_max=1.0, wait_jitter=0.2
    ):
        with attempt:
            tries += 1
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
                    dispatch_id = await gateway.create_dispatch(room, agent_name, metadata)
                except LiveKitCallError as err:
                    maybe_landed = maybe_landed or err.ambiguous
                    span.set_status(Status(StatusCode.ERROR, str(err)))
                    span.set_attribute("error.type", err.reason)
                    log.warning("CreateDispatch try %d failed: %s", tries, err, extra={"reason": err.reason})
                    raise
                span.set_attribute("switchboard.dispatch_id", dispatch_id)
                return DispatchResult(dispatch_id, tries, False)
    raise AssertionError("unreachable: stamina either returns or raises")
