"""OpenTelemetry for every Switchboard process, configured by the standard ``OTEL_*`` variables.

- Traces: always a real SDK provider (so trace ids propagate to workers and into logs); spans are
  exported over OTLP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set
  and ``OTEL_TRACES_EXPORTER`` is not ``none``. Protocol from ``OTEL_EXPORTER_OTLP_PROTOCOL``
  (``http/protobuf`` default, or ``grpc``); sampler from ``OTEL_TRACES_SAMPLER``/``_ARG``.
- Resource: ``service.name`` is the component's (``switchboard-orchestrator``, ...) unless
  ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` name another; never the SDK's
  ``unknown_service``.
- Metrics: always readable on the process's Prometheus ``/metrics``; also pushed over OTLP when an
  endpoint is set and ``OTEL_METRICS_EXPORTER`` is not ``none`` (Jaeger takes no metrics).
- Exporter complaints are throttled: a backend that is down or refuses a signal is said once per
  window with what to do, not every 10 s forever.
- :meth:`Telemetry.shutdown` flushes both within a bounded time; call it on every exit path
  (SIGTERM included). A backend that is gone costs at most that bound, not the exporters' retries.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

# What a shutdown may spend flushing spans and metrics to a backend, in all (ms). A backend that is
# gone would otherwise hold a SIGTERM for the exporters' whole retry budget (~13 s seen).
SHUTDOWN_FLUSH_MS = 1_500
# The loggers of the OTLP exporters (HTTP transport, HTTP metric/trace exporters, gRPC).
EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk.metrics._internal.export",
)
NO_METRICS_HINT = (
    "this OTLP endpoint takes no metrics (Jaeger does not): set OTEL_METRICS_EXPORTER=none; "
    "metrics stay on every process's /metrics"
)

# Seconds: room latencies run from milliseconds (dispatch) to tens of seconds (voice after failover).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)


@dataclass
class Telemetry:
    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    prometheus: CollectorRegistry
    exporting: bool

    def shutdown(self, budget_ms: int = SHUTDOWN_FLUSH_MS) -> None:
        """Flush and stop both providers within ``budget_ms`` in all, whatever the backend does.

        The SDK's own shutdown waits for an in-flight export and its retries (its timeouts are
        per call, not overall), so it runs on a daemon thread that the process does not wait for
        once the budget is spent: the spans it still held are lost, the exit is not."""
        providers = [p for p in (self.tracer_provider, self.meter_provider) if p is not None]
        if not providers:
            return
        done = threading.Event()

        def flush_and_stop() -> None:
            try:
                for provider in providers:
                    provider.force_flush(budget_ms)
                for provider in providers:
                    provider.shutdown()
            except Exception:  # never let telemetry break a shutdown
                log.exception("telemetry shutdown failed")
            finally:
                done.set()

        threading.Thread(target=flush_and_stop, name="telemetry-shutdown", daemon=True).start()
        if not done.wait(budget_ms / 1000):
            log.warning(
                "trace/metric backend did not take the last batch within %.1fs; exiting without it",
                budget_ms / 1000,
            )


@dataclass
class ExportComplaintThrottle(logging.Filter):
    """Lets each kind of exporter complaint through once per ``window_s``, counting the rest.

    A backend that is down, or one that refuses a signal (Jaeger answers 404 to OTLP metrics), makes
    the SDK log the same error on every export; an operator needs to hear it once, with what to do.
    """

    window_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _last: dict[tuple[str, str], float] = field(default_factory=dict)
    _suppressed: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.window_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        if record.levelno >= logging.WARNING and _refuses_metrics(record):
            record.msg = f"{record.msg}; {NO_METRICS_HINT}"
        if suppressed := self._suppressed.pop(key, 0):
            record.msg = f"{record.msg} ({suppressed} more like it in the last {self.window_s:.0f}s)"
        return True


def _throttle_exporter_complaints() -> None:
    throttle = ExportComplaintThrottle()
    for name in EXPORTER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ExportComplaintThrottle) for f in logger.filters):
            logger.addFilter(throttle)


def _refuses_metrics(record: logging.LogRecord) -> bool:
    args = record.args if isinstance(record.args, tuple) else ()
    return "metrics" in args and 404 in args


def _exporter_enabled(signal: str) -> bool:
    """``OTEL_<SIGNAL>_EXPORTER``: ``otlp`` (the default) or ``none``; anything else is said once."""
    value = os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower()
    if value == "none":
        return False
    if value not in ("otlp", ""):
        log.warning("OTEL_%s_EXPORTER=%s is not supported here (otlp or none); using otlp", signal, value)
    return otlp_endpoint(signal) is not None


def service_resource(service_name: str, attributes: dict[str, str] | None = None) -> Resource:
    """Our service name and attributes over the SDK's defaults, under the ``OTEL_SERVICE_NAME`` /
    ``OTEL_RESOURCE_ATTRIBUTES`` an operator set. (``Resource.create()`` alone would fill in
    ``unknown_service:python`` when neither is set, and that would win over ours.)"""
    ours = Resource.create({"service.name": service_name, **(attributes or {})})
    return ours.merge(OTELResourceDetector().detect())


def otlp_endpoint(signal: str = "TRACES") -> str | None:
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )


def _protocol(signal: str) -> str:
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )


def _span_exporter() -> SpanExporter:
    if _protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

        return GrpcSpans()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

    return HttpSpans()


def _metric_exporter() -> MetricExporter:
    if _protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

        return GrpcMetrics()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics

    return HttpMetrics()


def setup_telemetry(service_name: str, attributes: dict[str, str] | None = None) -> Telemetry:
    """Install this process's providers (once). A provider already installed (tests, an embedding
    application) is kept, and only the Prometheus registry is new."""
    resource = service_resource(service_name, attributes)
    exporting = _exporter_enabled("TRACES")
    _throttle_exporter_complaints()
    tracer_provider: TracerProvider | None = None
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        # Shut down by Telemetry.shutdown, within its budget; the SDK's own atexit hook has none.
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        if exporting:
            tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter()))
        trace.set_tracer_provider(tracer_provider)

    registry = CollectorRegistry()
    meter_provider: MeterProvider | None = None
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        readers: list[MetricReader] = [PrometheusMetricReader(registry=registry)]
        if _exporter_enabled("METRICS"):
            readers.append(PeriodicExportingMetricReader(_metric_exporter(), export_interval_millis=10_000))
        meter_provider = MeterProvider(
            resource=resource,
            shutdown_on_exit=False,
            metric_readers=readers,
            views=[
                View(
                    instrument_type=Histogram, aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS)
                )
            ],
        )
        metrics.set_meter_provider(meter_provider)
    if exporting:
        log.info("exporting traces over OTLP to %s", otlp_endpoint("TRACES"))
    return Telemetry(tracer_provider, meter_provider, registry, exporting)
