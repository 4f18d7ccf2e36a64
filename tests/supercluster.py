"""A real NATS supercluster of two regions for the tests: a cluster per region, joined by a
gateway whose links both run through fault proxies, so a test can cut the regions apart.

eu-central's three nodes have JetStream (the streams and buckets live there, as in one-stream
deployments); us-east's one node has none: its clients reach the streams over the gateway. Each
node advertises its proxy as its gateway address, so neither side can dial the other around the
cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from devstack.nats_server import NatsServer
from devstack.ports import free_tcp_port
from tests.drills.faultproxy import FaultProxy

EU, US = "eu-central", "us-east"


@dataclass
class SuperCluster:
    servers: dict[str, NatsServer]  # region -> the server its clients connect to
    proxies: dict[str, FaultProxy]  # node -> the proxy in front of its gateway port

    async def cut(self) -> None:
        """Both gateway links down (open connections reset, new ones refused)."""
        for proxy in self.proxies.values():
            await proxy.set_mode("down")

    async def heal(self, within_s: float = 20.0) -> None:
        for proxy in self.proxies.values():
            await proxy.set_mode("pass")
        await self.wait_joined(within_s)

    async def wait_joined(self, within_s: float = 20.0) -> None:
        """Until a request made in each region is answered from the other (interest crossed)."""
        async with contextlib.AsyncExitStack() as stack:
            clients = {r: await stack.enter_async_context(client(s.url)) for r, s in self.servers.items()}
            for here, there in ((EU, US), (US, EU)):
                subject = f"test.gateway.{uuid.uuid4().hex}"
                sub = await clients[there].subscribe(subject, cb=_echo)
                await clients[there].flush()
                try:
                    async with asyncio.timeout(within_s):
                        while True:
                            try:
                                await clients[here].request(subject, b"ping", timeout=0.5)
                                break
                            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                                await asyncio.sleep(0.1)  # interest not propagated yet: ask again
                finally:
                    await sub.unsubscribe()


async def _echo(msg: Msg) -> None:
    await msg.respond(msg.data)


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        yield nc
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def two_region_supercluster(root: Path, us_jetstream: bool = False) -> AsyncIterator[SuperCluster]:
    """eu-central: three JetStream nodes (JetStream beside a gateway runs clustered, and a meta
    group needs its peers: one node alone never elects a leader); us-east: one node, without
    JetStream, or with it (``us_jetstream``, for per-region state: it joins the one meta group of
    the supercluster, where eu-central's three nodes keep the majority through a cut). Every node's
    gateway port sits behind a proxy it advertises."""
    eu_nodes = [f"{EU}-{i + 1}" for i in range(3)]
    gateway_ports = {name: free_tcp_port() for name in [*eu_nodes, US]}
    async with contextlib.AsyncExitStack() as stack:
        proxies = {
            name: await stack.enter_async_context(FaultProxy("127.0.0.1", port))
            for name, port in gateway_ports.items()
        }

        def gateway(node: str, cluster: str, other: str, other_nodes: list[str]) -> str:
            urls = ", ".join(f'"nats://127.0.0.1:{proxies[n].port}"' for n in other_nodes)
            return (
                f'gateway {{ name: "{cluster}", host: "127.0.0.1", port: {gateway_ports[node]}, '
                f'advertise: "127.0.0.1:{proxies[node].port}", '
                f'gateways: [{{ name: "{other}", urls: [{urls}] }}] }}'
            )

        routes = [free_tcp_port() for _ in eu_nodes]
        eu = [
            NatsServer(
                root / "nats-eu",
                name=node,
                cluster_name=EU,
                cluster_port=routes[i],
                cluster_routes=routes,
                extra_config=gateway(node, EU, US, [US]),
            )
            for i, node in enumerate(eu_nodes)
        ]
        us_route = free_tcp_port()
        us = NatsServer(
            root / "nats-us",
            name=US,
            # JetStream beside a gateway runs clustered: a cluster block, even of one node.
            cluster_name=US,
            cluster_port=us_route,
            cluster_routes=[us_route],
            extra_config=gateway(US, US, EU, eu_nodes),
            jetstream=us_jetstream,
        )
        for server in [*eu, us]:
            server.start(wait=False)
            stack.callback(server.stop)
        for server in [*eu, us]:
            await asyncio.to_thread(server.wait_ready, 30.0)
        cluster = SuperCluster({EU: eu[0], US: us}, proxies)
        await cluster.wait_joined()
        yield cluster
