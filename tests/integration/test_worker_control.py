"""The pool control subject: ``drain`` drains a worker; ``exit`` kills it only where the config allows."""

from __future__ import annotations

from pathlib import Path

from nats.aio.client import Client as NATS

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from shared import subjects
from shared.codec import encode
from shared.control import PoolCommand
from tests.workerkit import HARD_EXIT, WorkerProcess, heartbeats


def _config(path: Path, allow_remote_kill: bool) -> Path:
    # Agent and region come from the pinned pool: the command line names only the pool.
    path.write_text(
        "regions: {eu-central: {}}\n"
        "pools: [{id: pool-ctl, agent: ctl-agent, region: eu-central}]\n"
        f"worker: {{capacity: 3, drain_grace_s: 1, allow_remote_kill: {str(allow_remote_kill).lower()}}}\n"
    )
    return path


async def test_drain_and_exit_commands(
    livekit_server: LiveKitServer, nats_server: NatsServer, nc: NATS, tmp_path: Path
) -> None:
    config = _config(tmp_path / "switchboard.yaml", allow_remote_kill=True)
    worker = WorkerProcess(
        livekit_server, nats_server.url, tmp_path / "w", "pool-ctl", agent="ctl-agent", capacity=0
    )
    worker.argv = (
        lambda: [  # type: ignore[method-assign]
            *WorkerProcess.argv(worker)[:2],
            "--pool",
            "pool-ctl",
            "--config",
            str(config),
            "--health-port",
            str(worker.health_port),
        ]
    )
    try:
        worker.start()
        subject = subjects.pool_control("pool-ctl")
        async with heartbeats(nc, "pool-ctl") as beats:
            beat = await beats.wait_for(lambda b: True, 5, "a beat")
            assert (beat.agent, beat.region, beat.capacity) == ("ctl-agent", "eu-central", 3)
            # A command for another worker of the pool is not ours.
            await nc.publish(subject, encode(PoolCommand(command="exit", worker="someone-else")))
            await nc.publish(subject, encode(PoolCommand(command="drain", reason="maintenance")))
            await beats.wait_for(lambda b: b.draining, 5, "a draining beat")
            assert await worker.wait_exit(within_s=20) == 0
        worker.stop()

        # The failover drill's hard exit, allowed by this config.
        worker.start()
        await nc.publish(subject, encode(PoolCommand(command="exit", reason="drill")))
        assert await worker.wait_exit(within_s=10) == HARD_EXIT
    finally:
        worker.stop()
    assert not worker.leftovers()


async def test_exit_is_refused_unless_allowed(
    livekit_server: LiveKitServer, nats_server: NatsServer, nc: NATS, tmp_path: Path
) -> None:
    worker = WorkerProcess(livekit_server, nats_server.url, tmp_path / "w", "pool-safe")
    try:
        worker.start()
        async with heartbeats(nc, "pool-safe") as beats:
            first = await beats.wait_for(lambda b: True, 5, "a beat")
            await nc.publish(subjects.pool_control("pool-safe"), encode(PoolCommand(command="exit")))
            # Still beating two beats later, and never draining.
            later = await beats.wait_for(lambda b: b.seq >= first.seq + 2, 5, "beats after the exit")
            assert not later.draining and worker.health()[0] == 200
    finally:
        worker.stop()
