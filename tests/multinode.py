"""A real two-node LiveKit cluster (Redis-backed multi-node) for the tests.

Two livekit-server processes — node "eu-central" and node "us-east" — share one throwaway
redis-server and one key pair, each on its own loopback ports. That is LiveKit's own multi-node
mode, the one self-hosted deployments across regions run: rooms, the room → node map and the
nodes' RPC bus (signal relay, agent job requests) all go through Redis.

Use the module-scoped ``livekit_cluster`` fixture (import it into the test module) or
:func:`two_node_cluster` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from livekit import api as lkapi

from devstack.livekit_server import LiveKitServer
from devstack.process import MissingBinaryError, running
from devstack.redis_server import RedisServer

REGIONS = ("eu-central", "us-east")
# LiveKit's Redis hashes (pkg/routing/redisrouter.go): room name → id of the node hosting the
# room, and node id → the node (a livekit.Node proto, region included).
ROOM_NODE_MAP = "room_node_map"
NODES = "nodes"


@dataclass
class LiveKitCluster:
    redis: RedisServer
    # region → the node in that region
    nodes: dict[str, LiveKitServer]

    def node_ids(self) -> dict[str, str]:
        """region → the node's id (random per start)."""
        return {region: node.node_id() for region, node in self.nodes.items()}

    def hosting_node_id(self, room: str) -> str | None:
        """The id of the node the cluster placed ``room`` on (None: not placed), as LiveKit stores
        it; no LiveKit API answer says which node hosts a room."""
        found = self.redis.command("HGET", ROOM_NODE_MAP, room)
        return found[0] if found and found[0] else None


@contextlib.contextmanager
def two_node_cluster(root: Path) -> Iterator[LiveKitCluster]:
    """Redis, then one node per region of :data:`REGIONS`; all stopped (nodes first) at the end."""
    # Every node of a cluster must accept the same tokens.
    api_key, api_secret = "devkey", secrets.token_urlsafe(32)
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(running(lambda n: RedisServer(root / f"redis-{n}")))

        def node(region: str, attempt: int) -> LiveKitServer:
            return LiveKitServer(
                root / f"{region}-{attempt}",
                api_key=api_key,
                api_secret=api_secret,
                redis_address=redis.address,
                region=region,
            )

        nodes = {region: stack.enter_context(running(functools.partial(node, region))) for region in REGIONS}
        cluster = LiveKitCluster(redis, nodes)
        # Each node registered itself in the shared Redis under its own id.
        registered = redis.command("HKEYS", NODES)
        assert sorted(cluster.node_ids().values()) == sorted(registered), registered
        yield cluster


@pytest.fixture(scope="module")
def livekit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKitCluster]:
    try:
        with two_node_cluster(tmp_path_factory.mktemp("livekit-cluster")) as cluster:
            yield cluster
    except MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)


async def wait_for_agent(
    api: lkapi.LiveKitAPI, room: str, within_s: float, *, active: bool = True, poll_s: float = 0.025
) -> lkapi.ParticipantInfo:
    """Poll ListParticipants until an agent participant is in ``room``; return it.

    ``active``: only once its state is ACTIVE (its WebRTC connection is up). An agent is listed
    (JOINING) as soon as its signal connection joins, before any media path exists; a room
    deleted then leaves the agent's connection to time out and retry.

    LiveKit's API has no "participant joined" stream to await (webhooks aside), so this polls,
    bounded by ``within_s``; ``poll_s`` is the resolution of a time measured around it.
    """
    want = lkapi.ParticipantInfo.State.ACTIVE if active else None
    try:
        async with asyncio.timeout(within_s):
            while True:
                listed = await api.room.list_participants(lkapi.ListParticipantsRequest(room=room))
                for p in listed.participants:
                    if p.kind == lkapi.ParticipantInfo.Kind.AGENT and want in (None, p.state):
                        return p
                await asyncio.sleep(poll_s)
    except TimeoutError:
        what = "active agent" if active else "agent"
        raise AssertionError(f"no {what} in room {room} within {within_s}s") from None
