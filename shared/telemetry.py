"""OpenTelemetry for every Switchboard process, configured by the standard ``OTEL_*`` variables.

- Traces: always a real SDK provider (so trace ids propagate to workers and into logs); spans are
  exported over OTLP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set.
  Protocol from ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf`` default, or ``grpc``); sampler
  from ``OTEL_TRACES_SAMPLER``/``_ARG``; resource from ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``.
- Metrics: always readable on the process's Prometheus ``/metrics``; also pushed over OTLP when an
  endpoint is set.
- :meth:`Telemetry.shutdown` flushes both; call it on every exit path (SIGTERM included).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

# Seconds: room latencies run from milliseconds (dispatch) to tens of seconds (voice after failover).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60)


@dataclass
class Telemetry:
    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    prometheus: CollectorRegistry
    exporting: bool

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is None:
                continue
            try:
                provider.force_flush(5_000)
                provider.shutdown()
            except Exception:  # never let telemetry break a shutdown
                log.exception("telemetry shutdown failed")


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
    resource = Resource.create({"service.name": service_name, **(attributes or {})}).merge(
        Resource.create()  # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over our defaults
    )
    exporting = otlp_endpoint("TRACES") is not None
    tracer_provider: TracerProvider | None = None
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        tracer_provider = TracerProvider(resource=resource)
        if exporting:
            tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter()))
        trace.set_tracer_provider(tracer_provider)

    registry = CollectorRegistry()
    meter_provider: MeterProvider | None = None
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        readers: list[MetricReader] = [PrometheusMetricReader(registry=registry)]
        if otlp_endpoint("METRICS") is not None:
            readers.append(PeriodicExportingMetricReader(_metric_exporter(), export_interval_millis=10_000))
        meter_provider = MeterProvider(
            resource=resource,
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
