"""The worker's OpenTelemetry gauges (on its /metrics and over OTLP): jobs, load, buffered reports."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from agent_worker.worker_state import WorkerState


class WorkerMetrics:
    def __init__(self, meter: Meter, state: WorkerState) -> None:
        opts = state.opts
        attrs = {
            "switchboard.pool": opts.pool,
            "switchboard.region": opts.region,
            "switchboard.worker": opts.worker_id,
        }

        def active(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(len(state.active_dispatches()), attrs)]

        def load(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(state.load(), attrs)]

        def pending(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(state.pending_reports(), attrs)]

        def draining(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(1 if state.draining else 0, attrs)]

        meter.create_observable_gauge("switchboard.worker.active_jobs", [active], unit="{job}")
        meter.create_observable_gauge("switchboard.worker.load", [load], description="active jobs / capacity")
        meter.create_observable_gauge(
            "switchboard.worker.pending_reports",
            [pending],
            description="statuses buffered while NATS is away",
        )
        meter.create_observable_gauge("switchboard.worker.draining", [draining])
