"""Tracing overhead per room event: the spans and propagation the orchestrator does for one event,
timed with no SDK (API no-op), with the SDK but no exporter (the default when no OTLP endpoint is
set), and with the SDK exporting through a BatchSpanProcessor (to an exporter that drops spans, so
only our side of the cost is measured).

Run: .venv/bin/python bench/tracing_overhead.py [--events 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider, SpanKind
from opentelemetry.trace import TracerProvider as ApiTracerProvider


class _DropExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def one_event(tracer: trace.Tracer, headers: dict[str, str]) -> None:
    """Mirror of the orchestrator's per-event tracing (consumer.py, room/reconciler.py, room/effects.py)."""
    ctx = extract(headers)
    attrs = {"switchboard.room": "ornina-1", "switchboard.attempt": 1, "switchboard.pool": "eu-central-a"}
    with tracer.start_as_current_span(
        "process switchboard.rooms.created",
        context=ctx,
        kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "nats", "messaging.operation.type": "process"},
    ):
        with tracer.start_as_current_span("schedule", attributes=attrs) as span:
            span.set_attribute("switchboard.decision.pool", "eu-central-a")
            span.set_attribute("switchboard.decision.candidates", 2)
            span.add_event("rejected", {"switchboard.pool": "eu-central-b", "switchboard.reason": "full"})
        with (
            tracer.start_as_current_span("dispatch", attributes=attrs),
            tracer.start_as_current_span("CreateDispatch", kind=SpanKind.CLIENT, attributes=attrs),
        ):
            carrier: dict[str, str] = {}
            inject(carrier)


def measure(provider: ApiTracerProvider, events: int) -> dict[str, float]:
    tracer = provider.get_tracer("bench")
    producer = TracerProvider().get_tracer("producer")
    with producer.start_as_current_span("send"):
        headers: dict[str, str] = {}
        inject(headers)
    for _ in range(min(2000, events)):  # warm-up
        one_event(tracer, headers)
    samples = []
    for _ in range(events):
        start = time.perf_counter_ns()
        one_event(tracer, headers)
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[int(len(samples) * 0.99)],
        "mean_us": statistics.fmean(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    results["no SDK (API no-op)"] = measure(NoOpTracerProvider(), args.events)
    results["SDK, no exporter"] = measure(TracerProvider(), args.events)
    exporting = TracerProvider()
    drop = _DropExporter()
    exporting.add_span_processor(BatchSpanProcessor(drop))
    results["SDK + BatchSpanProcessor exporter"] = measure(exporting, args.events)
    exporting.shutdown()
    base = results["no SDK (API no-op)"]["p50_us"]
    print(f"tracing per room event ({args.events} events; 4 spans, 1 event, extract + inject)")
    print(f"{'mode':38} {'p50 µs':>8} {'p99 µs':>8} {'mean µs':>8} {'+p50 vs no-op':>14}")
    for name, r in results.items():
        print(
            f"{name:38} {r['p50_us']:8.1f} {r['p99_us']:8.1f} {r['mean_us']:8.1f} {r['p50_us'] - base:14.1f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"events": args.events, "results": results, "exported_spans": drop.spans}, fh, indent=2)


if __name__ == "__main__":
    main()
