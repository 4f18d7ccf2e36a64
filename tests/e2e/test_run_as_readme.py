"""The parts started exactly as the README shows them, with nothing else in their environment: the
README's connection variables and its OTLP lines, no OTEL_SERVICE_NAME, no test-only knobs.

- Jaeger lists each process under its own service name (not the SDK's `unknown_service:python`).
- SIGTERM ends every part cleanly (exit 0, no traceback) within 5 s, also when NATS and the trace
  backend are already gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from livekit import api as lkapi
from nats.aio.client import Client as NATS

from devstack.jaeger import JaegerServer
from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from devstack.ports import free_tcp_port
from devstack.process import ServerProcess, start_with_fresh_ports
from orchestrator.records import RoomState
from orchestrator.store import open_bucket
from shared import bus
from shared.messages import RoomCreated
from tests.e2e.test_observability import jaeger  # noqa: F401  (fixture)
from tests.orchestratorkit import AGENT, publish_created_room, wait_for_record

pytestmark = pytest.mark.e2e
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
STOP_WITHIN_S = 5.0
# The README's switchboard.yaml, as a newcomer would write it.
CONFIG = {
    "default_region": "eu-central",
    "regions": {"eu-central": {"neighbours": ["us-east"]}, "us-east": {"neighbours": ["eu-central"]}},
    "rules": [{"name": "ornina", "match": "ornina-*", "agent": AGENT, "priority": 10}],
}


@pytest.fixture(autouse=True)
def _no_inherited_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parts inherit the test's environment: make sure no OTEL_* setting of ours leaks into them."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)


@dataclass
class Stack:
    """`switchboard orchestrator`, `ingest` and `worker` as the README's 'Run the parts' starts them."""

    workdir: Path
    env: dict[str, str]
    parts: dict[str, ServerProcess]

    def start(self, name: str, *args: str) -> ServerProcess:
        proc = ServerProcess(name, [SWITCHBOARD, *args], self.workdir / f"{name}.log", env=self.env)
        proc.start()
        self.parts[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.parts.values():
            proc.stop(timeout=15)


@pytest.fixture
def own_livekit(tmp_path: Path) -> Iterator[LiveKitServer]:
    """A livekit-server of this test's own, free to be killed."""
    server = start_with_fresh_ports(lambda n: LiveKitServer(tmp_path / f"livekit-{n}"))
    yield server
    server.kill()


@pytest.fixture
def stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    nats_server: NatsServer,
    jaeger: JaegerServer,  # noqa: F811
) -> Iterator[Stack]:
    # The session's livekit-server, unless the test has its own (kills it, or keeps the resync on).
    livekit_fixture = "own_livekit" if "own_livekit" in request.fixturenames else "livekit_server"
    livekit_server: LiveKitServer = request.getfixturevalue(livekit_fixture)
    config = tmp_path / "switchboard.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    env = {
        # README, "Connections and secrets come from the environment"
        "NATS_URL": nats_server.url,
        "LIVEKIT_URL": livekit_server.ws_url,
        "LIVEKIT_API_KEY": livekit_server.api_key,
        "LIVEKIT_API_SECRET": livekit_server.api_secret,
        "SWITCHBOARD_CONFIG": str(config),
        # README, "Watch the traces"
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    s = Stack(tmp_path, env, {})
    try:
        yield s
    finally:
        s.stop_all()


def _start_parts(stack: Stack) -> None:
    stack.start("orchestrator", "orchestrator")
    stack.start("ingest", "ingest", "--port", str(free_tcp_port()))
    stack.start(
        "worker",
        *("worker", "--agent", AGENT, "--region", "eu-central", "--pool", "eu-central-a", "--capacity", "4"),
    )


def _jaeger_services(jaeger: JaegerServer) -> set[str]:  # noqa: F811
    with urllib.request.urlopen(f"{jaeger.query_url}/api/services", timeout=2) as resp:
        return set(json.loads(resp.read())["data"] or [])


async def _await_services(jaeger: JaegerServer, wanted: set[str], within_s: float) -> set[str]:  # noqa: F811
    deadline = time.monotonic() + within_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen = await asyncio.to_thread(_jaeger_services, jaeger)
        if wanted <= seen:
            return seen
        await asyncio.sleep(0.5)  # Jaeger's query API has no push; polled, bounded
    return seen


def _sigterm_and_time(procs: list[ServerProcess]) -> dict[str, tuple[int | None, float]]:
    """SIGTERM every part at once; each one's exit code and seconds to exit (None: still running)."""
    started = time.monotonic()
    for proc in procs:
        proc.signal(signal.SIGTERM)
    outcome: dict[str, tuple[int | None, float]] = {}
    while len(outcome) < len(procs) and time.monotonic() - started < STOP_WITHIN_S + 10:
        for proc in procs:
            assert proc.proc is not None
            if proc.name not in outcome and (code := proc.proc.poll()) is not None:
                outcome[proc.name] = (code, time.monotonic() - started)
        time.sleep(0.01)  # exits are not awaitable together without threads; a bounded poll
    for proc in procs:
        outcome.setdefault(proc.name, (None, time.monotonic() - started))
    return outcome


async def _agent_track_published(api: lkapi.LiveKitAPI, room: str, within_s: float = 30.0) -> None:
    async with asyncio.timeout(within_s):
        while True:
            listed = await api.room.list_participants(lkapi.ListParticipantsRequest(room=room))
            if any(p.kind == lkapi.ParticipantInfo.Kind.AGENT and p.tracks for p in listed.participants):
                return
            await asyncio.sleep(0.1)


async def test_parts_started_as_the_readme_shows_have_their_service_names_in_jaeger(
    own_livekit: LiveKitServer,
    stack: Stack,
    nc: NATS,
    jaeger: JaegerServer,  # noqa: F811
) -> None:
    # A livekit-server of its own: the README's config keeps the resync on, which would serve the
    # session server's rooms of other tests too (and keep the worker busy past its SIGTERM).
    async with lkapi.LiveKitAPI(
        own_livekit.http_url, own_livekit.api_key, own_livekit.api_secret
    ) as livekit_api:
        _start_parts(stack)
        js = nc.jetstream()
        await bus.ensure_streams(js)
        kv = await open_bucket(js)
        # The README's own way for a backend to announce a room: create it in LiveKit, then publish
        # its event with the room's sid.
        await publish_created_room(js, livekit_api, RoomCreated(room="ornina-readme-1", region="eu-central"))
        record = await wait_for_record(
            kv, "ornina-readme-1", {RoomState.JOINED, RoomState.SPEAKING}, within=90
        )
        assert record.pool == "eu-central-a"

        # An operator's command against the running parts: the orchestrator answers for the pools, and
        # the command's own NATS close is no warning.
        status = await asyncio.to_thread(
            subprocess.run,
            [SWITCHBOARD, "status", "--json"],
            env={
                **os.environ,
                "NATS_URL": stack.env["NATS_URL"],
                "SWITCHBOARD_CONFIG": stack.env["SWITCHBOARD_CONFIG"],
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert "WARNING" not in status.stderr and "Traceback" not in status.stderr, status.stderr
        seen = json.loads(status.stdout)
        assert seen["pools_from"].startswith("orchestrator "), seen["pools_from"]
        assert [(p["pool"], p["liveness"]) for p in seen["pools"]] == [("eu-central-a", "alive")]

        wanted = {"switchboard-orchestrator", "switchboard-worker"}
        services = await _await_services(jaeger, wanted, within_s=30)
        assert wanted <= services, f"Jaeger lists {sorted(services)}"
        assert not any(s.startswith("unknown_service") for s in services), sorted(services)

        # The call ends once the agent is fully up (its track published: a room deleted while the
        # agent still publishes leaves its job waiting for the drain to cancel it), and a running
        # job would rightly get the worker's drain grace on SIGTERM.
        await _agent_track_published(livekit_api, "ornina-readme-1")
        await livekit_api.room.delete_room(lkapi.DeleteRoomRequest(room="ornina-readme-1"))
        await wait_for_record(kv, "ornina-readme-1", {RoomState.ENDED}, within=30)
        outcome = _sigterm_and_time(list(stack.parts.values()))
        for name, (code, seconds) in outcome.items():
            assert code == 0, f"{name} exited {code} after {seconds:.1f}s:\n{stack.parts[name].log_tail()}"
            assert seconds < STOP_WITHIN_S, f"{name} took {seconds:.1f}s to stop"
            log = stack.log(name)
            assert "Traceback" not in log, log
            # Jaeger takes no OTLP metrics: said at most once, with what to do, never every 10 s.
            refusals = log.count("Failed to export metrics")
            assert refusals <= 1, log
            if refusals:
                assert "OTEL_METRICS_EXPORTER=none" in log


async def test_sigterm_with_nats_livekit_and_the_trace_backend_gone_exits_cleanly_within_5s(
    own_livekit: LiveKitServer,
    stack: Stack,
    nats_server: NatsServer,
    jaeger: JaegerServer,  # noqa: F811
) -> None:
    _start_parts(stack)
    # Running: each part says so in its log once it is connected (no extra knobs to learn ports).
    for name, line in (
        ("orchestrator", "orchestrator replica"),
        ("ingest", "ingest listening"),
        ("worker", "registered with LiveKit"),
    ):
        stack.parts[name].wait_ready(lambda n=name, text=line: text in stack.log(n), 90)
    # Each part has metrics waiting to be exported; every server goes away under them, as when the
    # machine's other services stop first (a `make dev` whose parent died).
    jaeger.stop()
    nats_server.stop()
    own_livekit.kill()
    outcome = _sigterm_and_time(list(stack.parts.values()))
    for name, (code, seconds) in outcome.items():
        log = stack.log(name)
        assert code == 0, f"{name} exited {code} after {seconds:.1f}s:\n{stack.parts[name].log_tail()}"
        assert seconds < STOP_WITHIN_S, f"{name} took {seconds:.1f}s to stop:\n{stack.parts[name].log_tail()}"
        assert "Traceback" not in log, log
