"""Measure 2 — orchestrator overhead: event published on NATS → CreateDispatch leaving the orchestrator.

Method: the orchestrator (the real ``OrchestratorService``) runs in this process on uvloop, with the
SDK tracer provider every Switchboard process has, plus one span processor that notes the start
time of two spans per room: ``process switchboard.rooms.created`` (the consumer picked the event
up) and ``CreateDispatch`` (the client span opened right before the HTTP request). Its LiveKit URL
points at the Twirp stand-in (its own process), which answers at once — the LiveKit call itself is
excluded — and timestamps each CreateDispatch arrival as a cross-check. A separate publisher
process publishes ``RoomCreated`` through ``shared.bus`` at a fixed open-loop rate and notes the
wall-clock time just before each publish (= the producer span's start). All clocks are the same
machine's ``time.time_ns()``.

Floor, same machine, same rates, before the orchestrator starts: the same publisher process
publishing a same-size payload to a work-queue stream, and a pull consumer here fetching the way
the orchestrator does (``fetch(64, timeout=1)``): publish → fetch returned, and publish → PubAck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from bench.common import (
    REPO,
    STANDIN_TIMINGS,
    StandIn,
    StandInPool,
    config_dict,
    in_process_orchestrator,
    nats_client,
    nats_server,
    summary,
)
from bench.publisher import FLOOR_STREAM, FLOOR_SUBJECT
from shared.config import parse_config
from shared.settings import LiveKitSettings, NatsSettings, Settings
from shared.telemetry import setup_telemetry

FULL_RATES = ((10, 10.0), (100, 8.0), (500, 6.0))
QUICK_RATES = ((10, 3.0), (100, 2.0), (500, 1.0))
FLOOR_SECONDS = {10: 5.0, 100: 4.0, 500: 3.0}


class DispatchSpanRecorder(SpanProcessor):
    """Start times (ns) of the spans that bracket the orchestrator's work on a room."""

    def __init__(self) -> None:
        self.pickup: dict[str, int] = {}
        self.dispatch: dict[str, int] = {}

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        attrs = span.attributes or {}
        start = span.start_time
        if start is None:
            return
        if span.name == "CreateDispatch":
            room = attrs.get("switchboard.room")
            if isinstance(room, str):
                self.dispatch.setdefault(room, start)
        elif span.name == "process switchboard.rooms.created":
            mid = attrs.get("messaging.message.id")
            if isinstance(mid, str):
                self.pickup.setdefault(mid, start)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_RECORDER: DispatchSpanRecorder | None = None


def recorder() -> DispatchSpanRecorder:
    """Install (once per process) the SDK provider, as `switchboard orchestrator` does, plus the recorder."""
    global _RECORDER
    if _RECORDER is None:
        setup_telemetry("switchboard-orchestrator", {"switchboard.bench": "overhead"})
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        _RECORDER = DispatchSpanRecorder()
        provider.add_span_processor(_RECORDER)
    return _RECORDER


async def run_publisher(
    nats_url: str, mode: str, rate: float, count: int, prefix: str, out: Path
) -> dict[str, Any]:
    limit = count / rate + 10
    argv = [
        sys.executable,
        "-m",
        "bench.publisher",
        "--nats",
        nats_url,
        "--mode",
        mode,
        "--rate",
        str(rate),
        "--count",
        str(count),
        "--prefix",
        prefix,
        "--limit-s",
        str(limit),
        "--out",
        str(out),
    ]
    proc = await asyncio.create_subprocess_exec(*argv, cwd=str(REPO), start_new_session=True)
    try:
        async with asyncio.timeout(limit + 40):
            code = await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise RuntimeError(f"publisher ({mode}, {rate}/s) did not finish") from None
    if code != 0:
        raise RuntimeError(f"publisher ({mode}, {rate}/s) exited with {code}")
    result: dict[str, Any] = json.loads(await asyncio.to_thread(out.read_text))
    return result


def _ms(later: dict[str, int], earlier: dict[str, int]) -> list[float]:
    return [(later[k] - t) / 1e6 for k, t in earlier.items() if k in later]


async def _wait_for(check: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return bool(check())


async def floor(
    nats_url: str, work: Path, rates: tuple[tuple[int, float], ...], quick: bool
) -> list[dict[str, Any]]:
    rows = []
    async with nats_client(nats_url) as nc:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=FLOOR_STREAM,
                subjects=[FLOOR_SUBJECT],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
            )
        )
        await js.add_consumer(
            FLOOR_STREAM, ConsumerConfig(durable_name="floor", ack_policy=AckPolicy.EXPLICIT)
        )
        psub = await js.pull_subscribe_bind(durable="floor", stream=FLOOR_STREAM)
        received: dict[str, int] = {}

        async def consume() -> None:
            while True:
                try:
                    msgs = await psub.fetch(64, timeout=1.0)
                except TimeoutError:
                    continue
                now = time.time_ns()
                for m in msgs:
                    received.setdefault((m.headers or {}).get("Nats-Msg-Id", ""), now)
                    await m.ack()

        consumer = asyncio.create_task(consume())
        try:
            for rate, seconds in rates:
                duration = min(seconds, FLOOR_SECONDS[rate]) if not quick else seconds
                count = max(10, int(rate * duration))
                prefix = f"floor{rate}-"
                pub = await run_publisher(nats_url, "floor", rate, count, prefix, work / f"floor-{rate}.json")
                t0 = {k: int(v) for k, v in pub["t0_ns"].items()}
                await _wait_for(lambda t0=t0: all(k in received for k in t0), 10)
                acks = {k: int(v) for k, v in pub["ack_ns"].items()}
                rows.append(
                    {
                        "rate": rate,
                        "count": count,
                        "achieved_rate": pub["achieved_rate"],
                        "pickup_ms": summary(_ms(received, t0)),
                        "puback_ms": summary(_ms(acks, t0)),
                        "missing": sum(1 for k in t0 if k not in received),
                        "errors": pub["error_count"],
                        "samples_pickup_ms": _ms(received, t0),
                    }
                )
                print(
                    f"  floor {rate:>3}/s: publish→fetch p50 {rows[-1]['pickup_ms']['p50']:.3f} ms "
                    f"p99 {rows[-1]['pickup_ms']['p99']:.3f} ms",
                    flush=True,
                )
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            await psub.unsubscribe()
    return rows


async def run(work: Path, quick: bool = False) -> dict[str, Any]:
    rates = QUICK_RATES if quick else FULL_RATES
    rec = recorder()
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "method": "in-process span timestamps (producer span start → CreateDispatch span start)"
    }
    with nats_server(work) as ns:
        result["floor"] = await floor(ns.url, work, rates, quick)
        standin = StandIn(work)
        standin.start()
        try:
            settings = Settings(
                nats=NatsSettings(url=ns.url, startup_attempts=2),
                livekit=LiveKitSettings(
                    url=standin.url,
                    api_key="devkey",
                    api_secret="bench-standin-secret-0123456789abcdef",
                    request_timeout_s=5.0,
                ),
            )
            config = parse_config(config_dict(match="ov*", **STANDIN_TIMINGS))
            async with (
                nats_client(ns.url) as nc,
                in_process_orchestrator(
                    settings, config, [StandInPool(nc, "eu-central-a"), StandInPool(nc, "eu-central-b")]
                ) as service,
            ):
                rows = []
                for rate, seconds in rates:
                    count = max(10, int(rate * seconds))
                    prefix = f"ov{rate}-"
                    pub = await run_publisher(
                        ns.url, "rooms", rate, count, prefix, work / f"rooms-{rate}.json"
                    )
                    t0 = {k: int(v) for k, v in pub["t0_ns"].items()}
                    await _wait_for(lambda t0=t0: all(k in rec.dispatch for k in t0), 20)
                    arrivals = await asyncio.to_thread(standin.arrivals, prefix)
                    total = _ms(rec.dispatch, t0)
                    pickup = _ms(rec.pickup, t0)
                    inside = [
                        (rec.dispatch[k] - rec.pickup[k]) / 1e6
                        for k in t0
                        if k in rec.dispatch and k in rec.pickup
                    ]
                    rows.append(
                        {
                            "rate": rate,
                            "count": count,
                            "achieved_rate": pub["achieved_rate"],
                            "late_starts": pub["late_starts"],
                            "errors": pub["error_count"],
                            "missing": sum(1 for k in t0 if k not in rec.dispatch),
                            "event_to_create_dispatch_ms": summary(total),
                            "event_to_pickup_ms": summary(pickup),
                            "pickup_to_create_dispatch_ms": summary(inside),
                            "event_to_standin_arrival_ms": summary(_ms(arrivals, t0)),
                            "samples_ms": total,
                            "live_rooms_after": len(service.index),
                        }
                    )
                    s = rows[-1]["event_to_create_dispatch_ms"]
                    print(
                        f"  orchestrator {rate:>3}/s: event→CreateDispatch p50 {s['p50']:.2f} ms "
                        f"p99 {s['p99']:.2f} ms (n={s['n']})",
                        flush=True,
                    )
                result["rates"] = rows
        finally:
            standin.stop()
    return result
