"""Puller against a real nats-server: each message is handed over when it arrives (never held for
the next one), across idle spells longer than a request's life, and again after the server
restarts (its side of the pull requests is gone)."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from devstack.nats_server import NatsServer
from orchestrator.pull import Puller

pytestmark = pytest.mark.integration

STREAM, SUBJECT, DURABLE = "PULLTEST", "pulltest.x", "puller"


async def _one(puller: Puller, within: float = 5.0) -> list[Msg]:
    async with asyncio.timeout(within):
        return await puller.next()


async def test_each_message_is_handed_over_alone_as_it_arrives_also_after_idle_spells_and_a_restart(
    nats_server: NatsServer,
) -> None:
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = nc.jetstream()
        work_queue = RetentionPolicy.WORK_QUEUE
        await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT], retention=work_queue))
        await js.add_consumer(STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT))
        # Requests that expire within the idle spells below, heartbeats that keep them watched.
        puller = Puller(nc, STREAM, DURABLE, batch=8, expires_s=1.0, heartbeat_s=0.25)
        async with puller:
            for i in range(12):
                await js.publish(SUBJECT, f"m{i}".encode())
                got = await _one(puller)
                # Handed over alone: the next message has not been published yet.
                assert [m.data for m in got] == [f"m{i}".encode()]
                await got[0].ack()
                if i in (3, 7):
                    await asyncio.sleep(1.5)  # idle longer than a request lives: requests renewed
            # The server restarts (file store: the stream and the durable survive, the pull
            # requests do not): silence, a new request, and the message that waited comes.
            await asyncio.to_thread(nats_server.restart)
            async with asyncio.timeout(15):
                while not nc.is_connected:  # noqa: ASYNC110 (the client's reconnect loop)
                    await asyncio.sleep(0.05)
            await js.publish(SUBJECT, b"after")
            got = await _one(puller, within=10)
            assert [m.data for m in got] == [b"after"]
            await got[0].ack()
            # A burst comes in batches, none lost, none twice.
            for i in range(30):
                await js.publish(SUBJECT, f"b{i}".encode())
            seen: list[bytes] = []
            while len(seen) < 30:
                for m in await _one(puller):
                    seen.append(m.data)
                    await m.ack()
            assert sorted(seen) == sorted(f"b{i}".encode() for i in range(30))
    finally:
        await nc.close()
