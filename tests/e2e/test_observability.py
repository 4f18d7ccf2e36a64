"""Observability across processes: the orchestrator and a worker (both subprocesses) export over
OTLP to a real Jaeger; one room's trace holds both. The orchestrator's /metrics shows the room's
histograms; /readyz follows NATS; no secret and no raw user metadata in any span or log line."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import api as lkapi
from nats.aio.client import Client as NATS

from devstack.jaeger import JaegerServer
from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from devstack.process import MissingBinaryError
from orchestrator.records import RoomState
from orchestrator.store import open_bucket
from shared.messages import RoomCreated
from tests.orchestratorkit import (
    AGENT,
    OrchestratorProcess,
    make_config,
    publish_created_room,
    wait_for_record,
)
from tests.workerkit import Listener, WorkerFactory, workers  # noqa: F401  (fixture)

S = RoomState
pytestmark = pytest.mark.e2e
USER_SECRET_NOTE = "private-user-note-7f3a9"


@pytest.fixture
def jaeger(tmp_path: Path) -> Iterator[JaegerServer]:
    server = JaegerServer(tmp_path / "jaeger")
    try:
        server.start()
    except MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


def _otel_env(jaeger: JaegerServer, service: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


REQUIRED = {
    "process switchboard.rooms.created": "switchboard-orchestrator",
    "schedule": "switchboard-orchestrator",
    "dispatch": "switchboard-orchestrator",
    "CreateDispatch": "switchboard-orchestrator",
    "agent job": "switchboard-worker",
    "send switchboard.rooms.status": "switchboard-worker",
    "process switchboard.rooms.status": "switchboard-orchestrator",
}


async def _complete_trace(jaeger: JaegerServer, trace_id: str) -> list[dict[str, object]]:
    """Jaeger's query API has no push: poll it, bounded, until every expected span is stored."""
    deadline = time.monotonic() + 30
    spans: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        spans = await asyncio.to_thread(jaeger.trace, trace_id)
        if set(REQUIRED) <= {str(s["operationName"]) for s in spans}:
            return spans
        await asyncio.sleep(0.25)
    raise AssertionError(f"trace {trace_id} incomplete: {sorted({str(s['operationName']) for s in spans})}")


def _tree(spans: list[dict[str, object]]) -> str:
    """The trace as an operator reads it in Jaeger: one line per span, children indented."""
    by_id = {str(s["spanID"]): s for s in spans}
    children: dict[str | None, list[dict[str, object]]] = {}
    for span in spans:
        refs = span.get("references") or []
        assert isinstance(refs, list)
        parent = next((str(r["spanID"]) for r in refs if r.get("refType") == "CHILD_OF"), None)
        children.setdefault(parent if parent in by_id else None, []).append(span)
    start = min(int(str(s["startTime"])) for s in spans)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: int(str(s["startTime"]))):
            offset = (int(str(span["startTime"])) - start) / 1000
            duration = int(str(span["duration"])) / 1000
            indent = "  " * depth
            name, service = span["operationName"], span["serviceName"]
            lines.append(f"{offset:9.1f} ms {duration:9.1f} ms  {indent}{name}  [{service}]")
            walk(str(span["spanID"]), depth + 1)

    walk(None, 0)
    return "\n".join(lines)


async def test_one_room_one_trace_across_orchestrator_and_worker_in_jaeger(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    nats_server: NatsServer,
    livekit_server: LiveKitServer,
    jaeger: JaegerServer,
    tmp_path: Path,
) -> None:
    worker = workers.start(
        "eu-central-a",
        agent=AGENT,
        region="eu-central",
        capacity=2,
        extra_env=_otel_env(jaeger, "switchboard-worker"),
    )
    orch = OrchestratorProcess(
        tmp_path / "orch",
        nats_server.url,
        livekit_server,
        # Deadlines out of the way: this test is about the trace, not about how fast a cold worker
        # speaks on a loaded machine (a redispatch would put a second job in the trace).
        make_config(heartbeat_interval_s=1.0, assign_check_s=8, join_deadline_s=30, voice_deadline_s=30),
        extra_env=_otel_env(jaeger, "switchboard-orchestrator"),
    )
    orch.start()
    try:
        js = nc.jetstream()
        kv = await open_bucket(js)
        room = "ornina-observed"
        async with Listener(livekit_server, room):
            await publish_created_room(
                js,
                livekit_server,
                RoomCreated(room=room, region="eu-central", metadata={"note": USER_SECRET_NOTE}),
            )
            rec = await wait_for_record(kv, room, {S.SPEAKING}, within=60)
        assert rec.trace_id
        # The worker's job span ends (and is exported) when the job does: end the room.
        async with lkapi.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        ) as api:
            await api.room.delete_room(lkapi.DeleteRoomRequest(room=room))

        spans = await _complete_trace(jaeger, rec.trace_id)
        by_name = {str(s["operationName"]): s for s in spans}
        for name, service in REQUIRED.items():
            assert by_name[name]["serviceName"] == service, name
        # The worker's job span is a child of a CreateDispatch span (one per try), across processes.
        job_refs = by_name["agent job"]["references"]
        assert isinstance(job_refs, list)
        tries = {s["spanID"] for s in spans if s["operationName"] == "CreateDispatch"}
        assert any(r["spanID"] in tries for r in job_refs)
        print(f"\ntrace {rec.trace_id}\n" + _tree(spans))

        # Metrics: the room's histograms have counts on the Prometheus endpoint.
        status, metrics_text = orch.probe("/metrics")
        assert status == 200
        for histogram in (
            "switchboard_room_time_to_dispatch_seconds_count",
            "switchboard_room_time_to_voice_seconds_count",
            "switchboard_livekit_create_dispatch_duration_seconds_count",
        ):
            counts = [float(v) for v in re.findall(rf"^{histogram}{{[^}}]*}} (\S+)$", metrics_text, re.M)]
            assert counts and sum(counts) >= 1, f"{histogram} has no samples"
        assert "switchboard_pool_load" in metrics_text

        # One structured log line per transition, carrying the room's identifiers and trace.
        lines = [json.loads(line) for line in orch.log_text().splitlines() if line.startswith("{")]
        speaking = [e for e in lines if e.get("state") == "speaking" and e.get("room") == room]
        assert speaking, "no transition line for speaking"
        for key in ("room", "pool", "attempt", "dispatch_id", "trace_id", "span_id"):
            assert key in speaking[0], key
        assert speaking[0]["trace_id"] == rec.trace_id

        # Nothing secret or private in spans or logs.
        everything = str(spans) + orch.log_text() + worker.log_tail(100_000)
        for secret in (livekit_server.api_secret, USER_SECRET_NOTE):
            assert secret not in everything

        # /readyz follows NATS: stop it and the orchestrator says it is not ready.
        assert orch.probe("/readyz")[0] == 200
        nats_server.stop()
        deadline = time.monotonic() + 20
        while orch.probe("/readyz")[0] != 503:
            assert time.monotonic() < deadline, "readyz never flipped after NATS stopped"
            await asyncio.sleep(0.2)
        assert '"nats": false' in orch.probe("/readyz")[1]
        assert orch.probe("/healthz")[0] == 200  # alive, just not ready
    finally:
        orch.stop()
