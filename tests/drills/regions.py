"""The region drills' stack: two regions for real, with per-region state (``state: per_region``).

- NATS: a supercluster of two clusters joined by gateways (``tests/supercluster.py``): eu-central,
  three JetStream nodes; us-east, one. Each gateway link runs through a fault proxy, so a drill
  can cut the regions apart. Each region's streams and buckets live in its own cluster.
- LiveKit: two livekit-server nodes sharing a redis-server (``tests/multinode.py``), one per region;
  each region's rooms are created on its own node (CreateRoom with the node's id).
- Per region: orchestrator replicas started with ``SWITCHBOARD_REGION`` on their region's NATS,
  and worker pools registered with their region's LiveKit node over their region's NATS.

Everything else (the double-agent sampler, ``finish``, the definitions) is the drills' own
:class:`~tests.drills.harness.Stack`; room records are read from each room's own region.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from livekit import api as lkapi
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from devstack.livekit_server import LiveKitServer
from orchestrator.records import RoomRecord
from orchestrator.store import RoomStore, open_bucket
from shared import bus
from shared.messages import RoomCreated
from shared.settings import NatsSettings
from shared.subjects import Cell
from tests.drills.doubles import DoubleSampler
from tests.drills.harness import Orchestrator, Stack, drill_config, settled_check
from tests.multinode import LiveKitCluster, two_node_cluster
from tests.supercluster import EU, US, SuperCluster, two_region_supercluster

REGIONS = (EU, US)
# JetStream replicas of each region's streams: eu-central has three JetStream nodes, us-east one.
STREAM_REPLICAS = {EU: 3, US: 1}


def region_drill_config(**orchestrator: Any) -> dict[str, Any]:
    return {**drill_config(**orchestrator), "state": "per_region"}


class RegionStack(Stack):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.sc: SuperCluster | None = None
        self.lk_cluster: LiveKitCluster | None = None
        self.kvs: dict[str, KeyValue] = {}
        self.node_apis: dict[str, lkapi.LiveKitAPI] = {}
        self.home: dict[str, str] = {}  # room -> the region it was created in
        self._js: dict[str, JetStreamContext] = {}  # region -> a client of its own cluster
        self._world = contextlib.AsyncExitStack()

    def node(self, region: str) -> LiveKitServer:
        assert self.lk_cluster is not None
        return self.lk_cluster.nodes[region]

    def nats_url_of(self, region: str) -> str:
        assert self.sc is not None
        return self.sc.servers[region].url

    async def start(self, config: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config))
        await self.sink.__aenter__()
        self.sc = await self._world.enter_async_context(two_region_supercluster(self.root, us_jetstream=True))
        self.lk_cluster = self._world.enter_context(two_node_cluster(self.root / "livekit"))
        # The stack's own LiveKit and NATS are eu-central's (the sampler lists every node's rooms
        # through one node; the base environment's key pair is the cluster's).
        self.livekit = self.node(EU)
        self.secrets.append(self.livekit.api_secret)
        self.lk = lkapi.LiveKitAPI(self.livekit.http_url, self.livekit.api_key, self.livekit.api_secret)
        for region in REGIONS:
            node = self.node(region)
            self.node_apis[region] = await self._world.enter_async_context(
                lkapi.LiveKitAPI(node.http_url, node.api_key, node.api_secret)
            )
        self.nodes = []  # the supercluster's servers are stopped with self._world
        await self.connect_client(NatsSettings(url=self.nats_url_of(EU)))
        self.sampler = await self._running.enter_async_context(DoubleSampler(self.lk))

    async def connect_client(self, settings: NatsSettings | None = None) -> None:
        """One client per region, each on its own cluster, with its region's streams and bucket
        made (placed in its cluster) before the replicas race for them."""
        self.client_settings = settings
        async with asyncio.timeout(60):
            for region in REGIONS:
                nc = await bus.connect(NatsSettings(url=self.nats_url_of(region)), f"drill-{region}")
                self._world.push_async_callback(bus.close, nc)
                js = self._js[region] = nc.jetstream(timeout=10)
                cell = Cell(region)
                while True:
                    try:
                        await bus.ensure_streams(js, STREAM_REPLICAS[region], cell)
                        self.kvs[region] = await open_bucket(js, STREAM_REPLICAS[region], cell)
                        break
                    except Exception as err:
                        print(f"{region} streams not ready yet: {err!r}")
                        await asyncio.sleep(0.5)
                if region == EU:
                    self.nc, self.js, self.kv = nc, js, self.kvs[EU]

    async def stop(self) -> None:
        try:
            self.nc = None  # closed with self._world
            await super().stop()
        finally:
            await self._world.aclose()

    # -- processes -------------------------------------------------------------------------------

    def region_env(self, region: str) -> dict[str, str]:
        return {
            "NATS_URL": self.nats_url_of(region),
            "NATS_STREAM_REPLICAS": str(STREAM_REPLICAS[region]),
            "SWITCHBOARD_REGION": region,
        }

    async def start_region_orchestrators(self, region: str, count: int) -> list[Orchestrator]:
        return await self.start_orchestrators(
            count, livekit_url=self.node(region).http_url, env=self.region_env(region)
        )

    def node_of(self, room: str) -> LiveKitServer:
        """A room's users join through the node of the region it was created in."""
        return self.node(self.home.get(room, EU))

    def pool_place(self, region: str) -> tuple[LiveKitServer, str, dict[str, str]]:
        """A pool of ``region`` registers with its region's LiveKit node, over its region's NATS,
        and reads the drill's config (so it knows the state is per region)."""
        return self.node(region), self.nats_url_of(region), {"SWITCHBOARD_CONFIG": str(self.config_path)}

    # -- rooms -----------------------------------------------------------------------------------

    async def publish(
        self, room: str, region: str = EU, within_s: float = 60.0, home: str | None = None
    ) -> float:
        """Create the room on ``region``'s LiveKit node, then publish its event into that region's
        cell (as its backend or ingest does), retried with one Nats-Msg-Id until acked. ``home``:
        the room's home region when another (a lost region's user, served where it can be)."""
        assert self.lk_cluster is not None
        self.home[room] = region
        node_id = self.lk_cluster.node_ids()[region]
        made = await self.node_apis[region].room.create_room(
            lkapi.CreateRoomRequest(name=room, node_id=node_id, empty_timeout=600)
        )
        event = RoomCreated(room=room, sid=made.sid, region=home or region)
        deadline = time.monotonic() + within_s
        while True:
            try:
                await bus.publish_room_created(self._js[region], event, Cell(region))
                return time.time()
            except Exception as err:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{room}: not accepted within {within_s}s: {err!r}") from None
                await asyncio.sleep(0.2)

    async def publish_all(self, rooms: Iterable[str], region: str = EU) -> dict[str, float]:
        return {room: await self.publish(room, region) for room in rooms}

    def store_of(self, room: str) -> RoomStore:
        """The room's own region's bucket (the only one that may hold its record)."""
        region = self.home.get(room, EU)
        return RoomStore(self.kvs[region], bucket=Cell(region).rooms_bucket)

    async def in_other_region(self, rooms: Iterable[str]) -> list[str]:
        """Rooms that have a record in a region they were not created in (there must be none)."""
        found = []
        for room in rooms:
            for region in REGIONS:
                if region == self.home.get(room):
                    continue
                store = RoomStore(self.kvs[region], bucket=Cell(region).rooms_bucket)
                if await store.get(room) is not None:
                    found.append(room)
        return found

    async def wait_settled(
        self, rooms: list[str], within_s: float, speaking: Iterable[str] = ()
    ) -> dict[str, RoomRecord | None]:
        """Until every room is live (listener rooms speaking) or terminal, or the time is up."""
        return await self.wait_for(rooms, settled_check(speaking), within_s)

    async def wait_for(
        self, rooms: list[str], done: Callable[[str, RoomRecord | None], bool], within_s: float
    ) -> dict[str, RoomRecord | None]:
        """Until ``done`` holds for every room, or the time is up: re-read every half second (a watch
        is a new consumer, which a region cut off from the meta majority cannot create)."""
        deadline = time.monotonic() + within_s
        records = await self.records(rooms)
        while True:
            pending = [r for r in rooms if not done(r, records.get(r))]
            if not pending or time.monotonic() > deadline:
                return records
            await asyncio.sleep(0.5)
            records.update(await self.records(pending))
