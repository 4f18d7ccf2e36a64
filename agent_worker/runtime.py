"""One worker process, start to finish: LiveKit registration, NATS reports and heartbeats, drain.

Everything runs in one TaskGroup. The worker serves LiveKit whether or not NATS is reachable;
SIGTERM (or a ``drain`` command) drains: heartbeat ``draining``, no new jobs, running jobs get
``drain_grace_s`` to finish, then they are closed (each reports ``left``), buffered reports are
flushed, and the process exits 0. A second SIGTERM/SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

from livekit.agents import AgentServer
from opentelemetry import metrics
from prometheus_client import CollectorRegistry

from agent_worker.agent_server import build_agent_server
from agent_worker.control import obey_forever
from agent_worker.heartbeat import beat_forever
from agent_worker.loop_monitor import configure_loop_monitor
from agent_worker.nats_link import NatsLink
from agent_worker.options import WorkerOptions
from agent_worker.presence import answer_presence
from agent_worker.report_channel import ReportServer
from agent_worker.report_queue import ReportQueue
from agent_worker.worker_metrics import WorkerMetrics
from agent_worker.worker_state import WorkerState
from shared import subjects
from shared.probes import ProbeServer
from shared.settings import Settings
from shared.telemetry import setup_telemetry

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 5.0
FORCED_EXIT_CODE = 130


async def run_worker(
    opts: WorkerOptions, settings: Settings, prewarmed: dict[Any, Any] | None = None
) -> None:
    telemetry = setup_telemetry(
        "switchboard-worker",
        {
            "switchboard.pool": opts.pool,
            "switchboard.region": opts.region,
            "switchboard.worker": opts.worker_id,
        },
    )
    try:
        await _run(opts, settings, telemetry.prometheus, prewarmed)
    finally:
        telemetry.shutdown()  # flush spans on every exit, SIGTERM included


async def _run(
    opts: WorkerOptions,
    settings: Settings,
    prometheus: CollectorRegistry,
    prewarmed: dict[Any, Any] | None,
) -> None:
    link = NatsLink(settings.nats, f"switchboard-worker {opts.worker_id}", subjects.Cell(opts.state_region))
    queue = ReportQueue(opts.report_buffer)
    with tempfile.TemporaryDirectory(prefix="switchboard-worker-") as tmp:
        socket_path = Path(tmp) / "reports.sock"
        log.info(configure_loop_monitor(opts, os.environ))  # before livekit-agents starts executors
        reports = ReportServer(socket_path, queue.put)
        server = build_agent_server(opts, settings.livekit, str(socket_path), prewarmed)
        state = WorkerState(opts, server, queue, link)
        WorkerMetrics(metrics.get_meter("switchboard.agent_worker"), state)
        probes = ProbeServer(state.ready, prometheus, opts.health_host, opts.health_port, alive=state.health)
        await reports.start()
        try:
            async with probes:
                await _serve(opts, server, state, link, queue, probes)
        finally:
            await link.aclose()
            await reports.aclose()


async def _serve(
    opts: WorkerOptions,
    server: AgentServer,
    state: WorkerState,
    link: NatsLink,
    queue: ReportQueue,
    health: ProbeServer,
) -> None:
    stop = asyncio.Event()
    wake_heartbeat = asyncio.Event()
    reasons: list[str] = []

    def request_drain(reason: str) -> None:
        if state.draining:
            return
        state.draining = True
        reasons.append(reason)
        wake_heartbeat.set()  # tell the orchestrator now, not at the next beat
        stop.set()

    def on_signal(sig: signal.Signals) -> None:
        if state.draining:
            log.warning("%s again while draining: exiting now", sig.name)
            os._exit(FORCED_EXIT_CODE)
        log.info("%s: draining (grace %.0fs)", sig.name, opts.drain_grace_s)
        request_drain(sig.name)

    def on_started() -> None:
        state.started = True

    def on_registered(worker_id: str, _info: Any) -> None:
        state.livekit_worker_id = worker_id
        log.info(
            "registered with LiveKit as %s (agent_name %s, capacity %d, %s executor)",
            worker_id,
            opts.agent_name,
            opts.capacity,
            opts.executor,
        )

    server.on("worker_started", on_started)
    server.on("worker_registered", on_registered)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info(
        "worker %s of pool %s starting; probes on http://%s:%d (/healthz /readyz /metrics)",
        opts.worker_id,
        opts.pool,
        opts.health_host,
        health.port,
    )
    try:
        async with asyncio.TaskGroup() as tg:
            livekit = tg.create_task(server.run(devmode=opts.dev), name="livekit_agent_server")
            background = [
                tg.create_task(link.run(), name="nats_link"),
                tg.create_task(queue.publish_forever(link), name="report_publisher"),
                tg.create_task(beat_forever(state, link, wake_heartbeat), name="heartbeat"),
                tg.create_task(obey_forever(opts, link, request_drain), name="pool_control"),
                tg.create_task(answer_presence(opts, link), name="presence"),
            ]
            stopping = tg.create_task(stop.wait(), name="stop_request")
            await asyncio.wait({livekit, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not livekit.done():
                await _drain(server, opts, reasons[0] if reasons else "stop")
                await livekit
            stopping.cancel()
            wake_heartbeat.set()  # a last beat: zero jobs, draining
            if not await queue.flush(FLUSH_TIMEOUT_S):
                log.error("exiting with %d reports unpublished (NATS unreachable)", len(queue))
            for task in background:
                task.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _drain(server: AgentServer, opts: WorkerOptions, reason: str) -> None:
    grace = max(opts.drain_grace_s, 0.001)  # livekit-agents reads a 0 timeout as "wait forever"
    try:
        await server.drain(timeout=grace)  # type: ignore[arg-type]  # a float works; the hint says int
        log.info("drained (%s): every job finished within the grace period", reason)
    except TimeoutError:
        log.warning(
            "drain grace of %.0fs is over (%s): closing the remaining jobs", opts.drain_grace_s, reason
        )
    await server.aclose()
