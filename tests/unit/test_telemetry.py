"""shared.telemetry: service names, the exporter switches, throttled complaints, a bounded shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from shared.telemetry import ExportComplaintThrottle, Telemetry, _exporter_enabled, service_resource


@pytest.fixture(autouse=True)
def _clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for signal in ("TRACES", "METRICS"):
        monkeypatch.delenv(f"OTEL_{signal}_EXPORTER", raising=False)
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", raising=False)


def test_the_component_names_the_service_when_the_environment_does_not() -> None:
    attrs = service_resource("switchboard-worker", {"switchboard.pool": "eu-central-a"}).attributes
    assert attrs["service.name"] == "switchboard-worker"
    assert attrs["switchboard.pool"] == "eu-central-a"
    assert attrs["telemetry.sdk.name"] == "opentelemetry"


def test_otel_service_name_and_resource_attributes_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,switchboard.pool=x")
    attrs = service_resource("switchboard-worker", {"switchboard.pool": "eu-central-a"}).attributes
    assert attrs["service.name"] == "switchboard-worker"
    assert attrs["deployment.environment"] == "prod"
    assert attrs["switchboard.pool"] == "x"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "eu-workers")
    assert service_resource("switchboard-worker").attributes["service.name"] == "eu-workers"


def test_exporters_follow_the_endpoint_and_the_none_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not _exporter_enabled("TRACES")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert _exporter_enabled("TRACES") and _exporter_enabled("METRICS")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    assert _exporter_enabled("TRACES") and not _exporter_enabled("METRICS")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "None")
    assert not _exporter_enabled("TRACES")


def _record(msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("opentelemetry.exporter.otlp.common.http", level, __file__, 1, msg, args, None)


def test_a_refused_signal_is_said_once_per_window_with_what_to_do() -> None:
    now = [0.0]
    throttle = ExportComplaintThrottle(window_s=300, clock=lambda: now[0])
    refused = "Failed to export %s batch code: %s, reason: %s"
    first = _record(refused, "metrics", 404, "Not Found")
    assert throttle.filter(first)
    assert "OTEL_METRICS_EXPORTER=none" in first.getMessage()
    for _ in range(29):  # every 10 s for the rest of the window
        now[0] += 10
        assert not throttle.filter(_record(refused, "metrics", 404, "Not Found"))
    # Another kind of complaint is not held back by the first.
    assert throttle.filter(_record("Failed to export %s batch due to timeout", "traces"))
    now[0] += 10
    again = _record(refused, "metrics", 404, "Not Found")
    assert throttle.filter(again)
    assert "29 more like it" in again.getMessage()


class _StuckExporter(SpanExporter):
    """A backend that never answers: each export blocks until the test lets go."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(30)
        return SpanExportResult.FAILURE


def test_shutdown_is_bounded_when_the_backend_hangs(caplog: pytest.LogCaptureFixture) -> None:
    exporter = _StuckExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("a span"):
        pass
    telemetry = Telemetry(provider, None, prometheus=None, exporting=True)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="shared.telemetry"):
            telemetry.shutdown(budget_ms=300)
        assert time.monotonic() - started < 1.5
        assert "exiting without it" in caplog.text
    finally:
        exporter.release.set()
