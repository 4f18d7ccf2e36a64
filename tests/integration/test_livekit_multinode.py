"""Multi-node LiveKit (v1.13.5, Redis-backed): does a worker registered with one node serve rooms
hosted on another?

Users reported (livekit/livekit#3645, livekit/agents#2235) that a worker only got jobs for rooms on
the node it registered with. Two real nodes ("eu-central", "us-east") share one Redis; each has one
real ``switchboard worker`` registered only with it (its LIVEKIT_URL), in its own pool. A room is
pinned to a node with CreateRoom's ``node_id`` and that placement is read back from LiveKit's
``room_node_map`` in Redis.

What v1.13.5 does: job requests go over Redis by agent_name, so the worker on the other node gets
the job and its agent joins the room on the room's node, as fast as a worker on the same node
(~0.3 s from CreateDispatch to the agent ACTIVE on loopback, 200 ms of it psrpc's wait for
claims). ListRooms on any node lists every node's rooms, with nothing saying where they are.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from livekit import api as lkapi

from devstack.livekit_server import server_api as node_api
from devstack.nats_server import NatsServer
from devstack.process import MissingBinaryError, running
from tests.multinode import (
    REGIONS,
    LiveKitCluster,
    livekit_cluster,  # noqa: F401  (fixture)
    wait_for_agent,
)
from tests.workerkit import WorkerProcess, dispatch

pytestmark = pytest.mark.integration

EU, US = REGIONS
# The drills' agent: joins and stays, silent until a listener comes (cheap on 2 cores).
ENTRYPOINT = "tests.drills.drill_agent:entrypoint"
AGENT_WITHIN_S = 30.0
RUNS = 5  # per case, for the medians
# (room's node, worker's node, node whose API gets CreateRoom and CreateDispatch)
CROSS_CASES = [(EU, US, EU), (EU, US, US), (US, EU, US), (US, EU, EU)]


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The workers report to NATS; nothing here reads it."""
    root = tmp_path_factory.mktemp("nats")
    try:
        with running(lambda n: NatsServer(root / str(n))) as server:
            yield server.url
    except MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def pools(
    livekit_cluster: LiveKitCluster,  # noqa: F811
    nats_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, WorkerProcess]]:
    """region → a worker of pool ``mn-<region>`` registered only with that region's node."""
    root = tmp_path_factory.mktemp("workers")
    workers = {
        region: WorkerProcess(
            node,
            nats_url,
            root / region,
            f"mn-{region}",
            region=region,
            capacity=10,
            extra_args=["--entrypoint", ENTRYPOINT],
        )
        for region, node in livekit_cluster.nodes.items()
    }
    try:
        for worker in workers.values():  # both start at once, then both are awaited
            worker.launch()
        for worker in workers.values():
            assert worker.process is not None
            worker.process.wait_ready(functools.partial(_registered, worker), worker.register_timeout_s)
        yield workers
    finally:
        for worker in workers.values():
            worker.stop()
        left = [region for region, w in workers.items() if w.process and w.leftovers()]
        assert not left, f"processes left behind by the workers of {left}"


def _registered(worker: WorkerProcess) -> bool:
    return worker.health()[0] == 200


async def create_room_on(cluster: LiveKitCluster, api: lkapi.LiveKitAPI, region: str, room: str) -> None:
    """Create ``room`` hosted on ``region``'s node, whichever node ``api`` talks to. (The default
    node selector, ``any`` sorted by ``random``, would put a room without node_id on either.)"""
    node_id = cluster.nodes[region].node_id()
    await api.room.create_room(lkapi.CreateRoomRequest(name=room, node_id=node_id))
    assert cluster.hosting_node_id(room) == node_id


@dataclass
class Timing:
    listed: float  # CreateDispatch → the agent listed by ListParticipants (its signal joined)
    active: float  # CreateDispatch → the agent listed as ACTIVE (its WebRTC connection up)


def summary(case: str, timings: list[Timing]) -> str:
    parts = []
    for what in ("listed", "active"):
        seconds = [getattr(t, what) for t in timings]
        parts.append(f"{what} median {statistics.median(seconds):.3f}s {[round(x, 3) for x in seconds]}")
    return f"dispatch → agent, {case}: " + "; ".join(parts)


async def dispatch_until_active(
    cluster: LiveKitCluster, room_region: str, worker: WorkerProcess, room: str
) -> Timing:
    """Room on ``room_region``'s node, CreateDispatch to ``worker``'s pool through that node;
    timed until the agent is listed, then active. The room is deleted after."""
    async with node_api(cluster.nodes[room_region]) as api:
        await create_room_on(cluster, api, room_region, room)
        began = time.monotonic()
        await dispatch(api, worker, room)
        await wait_for_agent(api, room, AGENT_WITHIN_S, active=False)
        listed = time.monotonic() - began
        agent = await wait_for_agent(api, room, AGENT_WITHIN_S)
        active = time.monotonic() - began
        assert agent.attributes["switchboard.pool"] == worker.pool
        await api.room.delete_room(lkapi.DeleteRoomRequest(room=room))
    return Timing(listed, active)


@pytest.mark.parametrize(
    ("room_region", "worker_region", "api_region"),
    CROSS_CASES,
    ids=[f"room-{room}.worker-{worker}.via-{api}" for room, worker, api in CROSS_CASES],
)
async def test_a_worker_serves_a_room_hosted_on_the_other_node(
    livekit_cluster: LiveKitCluster,  # noqa: F811
    pools: dict[str, WorkerProcess],
    room_region: str,
    worker_region: str,
    api_region: str,
) -> None:
    """The job goes to the only worker serving the agent_name, on the other node, and its agent
    joins the room where the room is: both nodes list it in the room, which stays put."""
    cluster, worker = livekit_cluster, pools[worker_region]
    room = f"mn-cross-{room_region}-{worker_region}-via-{api_region}"
    async with node_api(cluster.nodes[api_region]) as api:
        await create_room_on(cluster, api, room_region, room)
        await dispatch(api, worker, room)
        agent = await wait_for_agent(api, room, AGENT_WITHIN_S)  # ACTIVE: media connected
        assert agent.attributes["switchboard.pool"] == worker.pool
        assert agent.attributes["switchboard.region"] == worker_region
        # Both nodes answer for the room (the one not hosting it relays over Redis), and the agent
        # joined the room on its hosting node: the placement did not move.
        for region in REGIONS:
            async with node_api(cluster.nodes[region]) as other:
                listed = await other.room.list_participants(lkapi.ListParticipantsRequest(room=room))
            assert [(p.identity, p.state) for p in listed.participants] == [
                (agent.identity, lkapi.ParticipantInfo.State.ACTIVE)
            ], region
        assert cluster.hosting_node_id(room) == cluster.nodes[room_region].node_id()
        await api.room.delete_room(lkapi.DeleteRoomRequest(room=room))


async def test_every_job_request_waits_for_every_nodes_claim_on_either_path(
    livekit_cluster: LiveKitCluster,  # noqa: F811
    pools: dict[str, WorkerProcess],
) -> None:
    """CreateDispatch → agent listed and active, for rooms on eu-central: the eu-central worker
    (same node) against the us-east worker (the job request and the agent's signalling cross over
    Redis), alternating. A job request waits >= 200 ms for claims from every node (psrpc's
    affinity short circuit) whichever node wins; the times themselves are printed, not asserted
    (on this machine the medians agreed within ~50 ms: 0.33 s same-node, 0.34 s cross-node)."""
    same: list[Timing] = []
    cross: list[Timing] = []
    for run in range(RUNS):
        same.append(await dispatch_until_active(livekit_cluster, EU, pools[EU], f"mn-time-same-{run}"))
        cross.append(await dispatch_until_active(livekit_cluster, EU, pools[US], f"mn-time-cross-{run}"))
    print(f"\n{summary('same-node', same)}\n{summary('cross-node', cross)}")
    assert min(t.listed for t in same + cross) >= 0.2, (same, cross)
    assert all(t.active >= t.listed for t in same + cross), (same, cross)


async def test_list_rooms_on_either_node_lists_the_rooms_of_both(
    livekit_cluster: LiveKitCluster,  # noqa: F811
) -> None:
    """ListRooms reads the cluster's rooms from Redis: each node lists both nodes' rooms, and
    nothing in a Room says which node (or region) hosts it."""
    cluster = livekit_cluster
    # Names that do not spell a region: the check below looks for region names in the bytes.
    rooms = {region: f"mn-list-{n}" for n, region in enumerate(REGIONS)}
    async with node_api(cluster.nodes[EU]) as api:
        for region, room in rooms.items():
            await create_room_on(cluster, api, region, room)
    node_ids = cluster.node_ids()
    listings: dict[str, list[lkapi.Room]] = {}
    for region in REGIONS:
        async with node_api(cluster.nodes[region]) as api:
            everything = await api.room.list_rooms(lkapi.ListRoomsRequest())
            by_name = await api.room.list_rooms(lkapi.ListRoomsRequest(names=list(rooms.values())))
        assert set(rooms.values()) <= {r.name for r in everything.rooms}, region
        listings[region] = sorted(by_name.rooms, key=lambda r: r.name)
        assert [r.name for r in listings[region]] == sorted(rooms.values()), region
    # The same rooms (same sids) whichever node answers.
    assert [r.sid for r in listings[EU]] == [r.sid for r in listings[US]]
    for listed in listings[EU]:
        # On the wire (unknown fields included), no node id and no region name.
        raw = listed.SerializeToString()
        for token in [*node_ids.values(), *REGIONS]:
            assert token.encode() not in raw, (listed.name, token)
    async with node_api(cluster.nodes[US]) as api:
        for room in rooms.values():
            await api.room.delete_room(lkapi.DeleteRoomRequest(room=room))


async def test_a_room_auto_created_by_create_dispatch_lands_on_either_node(
    livekit_cluster: LiveKitCluster,  # noqa: F811
) -> None:
    """Without a node_id, the default node selector (``any``, sorted by ``random``) places a room
    on any node, whichever node's API was called: CreateDispatch's auto-create (what Switchboard's
    dispatch does for a room not yet created) through eu-central puts rooms on us-east too.
    (20 rooms all on one node by chance: 2 × 2⁻²⁰.)"""
    cluster = livekit_cluster
    rooms = [f"mn-placed-{n}" for n in range(20)]
    async with node_api(cluster.nodes[EU]) as api:
        for room in rooms:
            await api.agent_dispatch.create_dispatch(
                lkapi.CreateAgentDispatchRequest(agent_name="nobody.serves-this", room=room)
            )
        placed = [cluster.hosting_node_id(room) for room in rooms]
        for room in rooms:
            await api.room.delete_room(lkapi.DeleteRoomRequest(room=room))
    counts = {region: placed.count(node_id) for region, node_id in cluster.node_ids().items()}
    print(f"\nrooms auto-created through {EU}'s API, per hosting node: {counts}")
    assert sum(counts.values()) == len(rooms)
    assert all(counts.values()), counts
