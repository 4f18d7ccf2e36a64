"""OpenTelemetry for a worker process: a real tracer provider (so statuses carry real span ids),
exporting over OTLP when the standard ``OTEL_EXPORTER_OTLP_*`` variables name an endpoint."""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

log = logging.getLogger(__name__)


def configure_tracing(attributes: dict[str, str]) -> TracerProvider | None:
    """Install a tracer provider unless the process already has an SDK one (tests, embedding apps)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "switchboard-worker")})
    provider = TracerProvider(resource=resource.merge(Resource.create(dict(attributes))))
    exporter = _otlp_exporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def _otlp_exporter() -> SpanExporter | None:
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return None
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    return Http()
