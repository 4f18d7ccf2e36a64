"""The ingest against real servers: livekit-server's own webhooks end to end, and bad requests.

End to end: livekit-server is configured with the ingest as its webhook URL; a user joins a new
room; room_started → ingest → NATS → the orchestrator (in-process) → a real worker subprocess
(``switchboard worker``) joins and is heard → the record is ``speaking``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import nats
import pytest
from livekit import api as lkapi
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from prometheus_client.parser import text_string_to_metric_families

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from devstack.ports import free_tcp_port
from devstack.probe import http_ok
from devstack.process import ServerProcess
from orchestrator.ingest.server import IngestServer
from orchestrator.records import RoomState
from orchestrator.store import open_bucket
from shared import subjects
from shared.codec import decode
from shared.config import SwitchboardConfig, parse_config
from shared.messages import RoomCreated
from shared.settings import LiveKitSettings, NatsSettings, Settings
from shared.subjects import Cell
from tests.orchestratorkit import AGENT, make_config, make_settings, running_orchestrator, wait_for_record
from tests.workerkit import SWITCHBOARD, Listener, WorkerProcess

pytestmark = pytest.mark.integration

KEY = "webhook-key"
SECRET = "webhook-secret-0123456789-abcdefghijklmnop"
MAX_BODY = 4096


def ingest_settings(nats_url: str, key: str = KEY, secret: str = SECRET) -> Settings:
    return Settings(
        nats=NatsSettings(url=nats_url, startup_attempts=2),
        livekit=LiveKitSettings(api_key=key, api_secret=secret),
    )


def ingest_config(port: int = 0, **orchestrator: object) -> SwitchboardConfig:
    base = make_config(**orchestrator).model_dump(mode="json")
    base["ingest"] = {"host": "127.0.0.1", "port": port, "max_body_bytes": MAX_BODY, "publish_timeout_s": 1.0}
    return parse_config(base)


@contextlib.asynccontextmanager
async def running_ingest(settings: Settings, config: SwitchboardConfig) -> AsyncIterator[IngestServer]:
    server = IngestServer(settings, config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def sign(body: bytes, key: str = KEY, secret: str = SECRET) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return lkapi.AccessToken(key, secret).with_sha256(digest).to_jwt()


def room_started(room: str, sid: str, metadata: str = "") -> bytes:
    return json.dumps(
        {"event": "room_started", "room": {"name": room, "sid": sid, "metadata": metadata}}
    ).encode()


class Published:
    """Everything published on the room subjects (core subscription: sees JetStream publishes too)."""

    def __init__(self) -> None:
        self.subjects: list[str] = []
        self.bodies: list[dict[str, object]] = []
        self._changed = asyncio.Condition()

    async def on_msg(self, msg: Msg) -> None:
        async with self._changed:
            self.subjects.append(msg.subject)
            self.bodies.append(json.loads(msg.data))
            self._changed.notify_all()

    async def wait_for_count(self, n: int, within: float = 10) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.bodies) >= n)


async def post(url: str, body: bytes, auth: str | None) -> int:
    headers = {"Content-Type": "application/webhook+json"}
    if auth is not None:
        headers["Authorization"] = auth
    async with (
        aiohttp.ClientSession() as session,
        asyncio.timeout(10),
        session.post(url, data=body, headers=headers) as resp,
    ):
        return resp.status


async def test_a_slow_body_is_cut_off_and_others_are_served_meanwhile(nats_server: NatsServer) -> None:
    """A client that sends its headers and then dribbles its body (slow loris) gets a 408 after
    body_read_timeout_s, and holds nothing from the webhooks that arrive meanwhile."""
    config = ingest_config()
    slow_limit = config.ingest.model_copy(update={"body_read_timeout_s": 1.0})
    config = config.model_copy(update={"ingest": slow_limit})
    async with running_ingest(ingest_settings(nats_server.url), config) as ingest:
        port = ingest.bound_port
        body = room_started("ornina-slow", "RM_slow")
        slow = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST {config.ingest.path} HTTP/1.1\r\nHost: x\r\nAuthorization: {sign(body)}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:5]
            )
            await writer.drain()
            slow.append((reader, writer))
        try:
            other = room_started("ornina-quick", "RM_quick")
            async with asyncio.timeout(1.0):  # served at once, beside twenty stalled requests
                assert await post(ingest.url, other, sign(other)) == 200
            async with asyncio.timeout(5.0):
                statuses = [(await reader.readline()).decode() for reader, _ in slow]
            assert all(" 408 " in line for line in statuses), statuses
        finally:
            for _, writer in slow:
                writer.close()


async def test_headers_sent_a_byte_at_a_time_are_cut_off(nats_server: NatsServer) -> None:
    """A client that opens connections and never finishes a request head (slow loris) is
    disconnected after ingest.idle_timeout_s, while webhooks beside it are served at once."""
    config = ingest_config()
    quick_idle = config.ingest.model_copy(update={"idle_timeout_s": 1.0})
    config = config.model_copy(update={"ingest": quick_idle})
    async with running_ingest(ingest_settings(nats_server.url), config) as ingest:
        slow = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", ingest.bound_port)
            writer.write(f"POST {config.ingest.path} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
            await writer.drain()
            slow.append((reader, writer))
        try:
            other = room_started("ornina-beside", "RM_beside")
            async with asyncio.timeout(1.0):
                assert await post(ingest.url, other, sign(other)) == 200
            async with asyncio.timeout(5.0):  # each stalled connection is closed by the server
                ends = [await reader.read() for reader, _ in slow]
            assert all(b"200" not in end for end in ends)
        finally:
            for _, writer in slow:
                writer.close()


async def test_one_client_gets_only_its_share_of_connections(nats_server: NatsServer) -> None:
    """Past ingest.max_connections_per_client, a client's new connections are closed at once; a
    webhook from another address is served beside them."""
    config = ingest_config()
    capped = config.ingest.model_copy(update={"max_connections_per_client": 3, "idle_timeout_s": 60.0})
    config = config.model_copy(update={"ingest": capped})
    async with running_ingest(ingest_settings(nats_server.url), config) as ingest:
        held = []
        for _ in range(10):  # from 127.0.0.2: another client than the webhook below (127.0.0.1)
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", ingest.bound_port, local_addr=("127.0.0.2", 0)
            )
            writer.write(b"POST /webhook HTTP/1.1\r\nHost: x\r\n")  # and never more
            await writer.drain()
            held.append((reader, writer))
        try:
            async with asyncio.timeout(5.0):
                closed = [reader for reader, _ in held[3:] if await reader.read() == b""]
            assert len(closed) == 7
            other = room_started("ornina-other-client", "RM_other")
            async with asyncio.timeout(1.0):
                assert await post(ingest.url, other, sign(other)) == 200
            assert all(not reader.at_eof() for reader, _ in held[:3])  # its first three stay open
        finally:
            for _, writer in held:
                writer.close()


async def test_livekit_webhook_to_speaking_agent(nats_server: NatsServer, nc: NATS, tmp_path: Path) -> None:
    ingest_port = free_tcp_port()
    livekit = LiveKitServer(tmp_path / "lk", webhook_urls=[f"http://127.0.0.1:{ingest_port}/webhook"])
    livekit.start()
    worker = WorkerProcess(
        livekit, nats_server.url, tmp_path / "worker", "eu-central-a", agent=AGENT, region="eu-central"
    )
    try:
        worker.start()
        config = ingest_config(ingest_port, heartbeat_interval_s=1.0, join_deadline_s=30, voice_deadline_s=30)
        settings = make_settings(nats_server, livekit)
        async with running_orchestrator(settings, config), running_ingest(settings, config):
            kv = await open_bucket(nc.jetstream())
            # Joining creates the room: LiveKit itself fires room_started at the ingest.
            async with Listener(livekit, "ornina-webhook-1") as listener:
                rec = await wait_for_record(kv, "ornina-webhook-1", {RoomState.SPEAKING}, within=60)
                await listener.wait_audible(30)
        assert rec.sid and rec.sid.startswith("RM_")  # the sid came from LiveKit's webhook
        assert rec.pool == "eu-central-a" and rec.home_region == "eu-central"
        assert [h.event for h in rec.history][:3] == ["received", "rule", "decision"]
    finally:
        worker.stop()
        livekit.stop()
    assert not worker.leftovers()


async def test_bad_requests_are_refused_and_nothing_is_published(nats_server: NatsServer, nc: NATS) -> None:
    published = Published()
    await nc.subscribe("switchboard.rooms.>", cb=published.on_msg)
    async with running_ingest(ingest_settings(nats_server.url), ingest_config()) as ingest:
        url = ingest.url
        good = room_started("ornina-in-1", "RM_in1", json.dumps({"region": "us-east", "lang": "de"}))
        assert await post(url, good, None) == 401  # no signature
        assert await post(url, good, sign(good, secret=SECRET + "x")) == 401  # wrong secret
        assert await post(url, good, sign(good, key="other")) == 401  # wrong key (issuer)
        assert await post(url, good, sign(b"another body")) == 401  # body does not match the hash
        assert await post(url, good, "Bearer " + sign(good)) == 401  # LiveKit sends a raw JWT
        # Every 401 reads the same: the caller learns nothing of which check failed.
        async with aiohttp.ClientSession() as http:
            bodies = set()
            for auth in (None, sign(good, secret=SECRET + "x"), sign(b"another body"), "Bearer x"):
                headers = {"Authorization": auth} if auth else {}
                async with http.post(url, data=good, headers=headers) as resp:
                    assert resp.status == 401
                    bodies.add(await resp.text())
            assert len(bodies) == 1 and "unauthorized" in bodies.pop()
        malformed = b'{"event": "room_started", "room": '
        assert await post(url, malformed, sign(malformed)) == 400
        not_utf8 = b"\xff\xfe{}"
        assert await post(url, not_utf8, sign(not_utf8)) == 400
        nameless = json.dumps({"event": "room_started", "room": {"sid": "RM_x"}}).encode()
        assert await post(url, nameless, sign(nameless)) == 400
        huge = room_started("ornina-big", "RM_big", json.dumps({"pad": "x" * MAX_BODY}))
        assert await post(url, huge, sign(huge)) == 413
        other = json.dumps({"event": "participant_joined", "room": {"name": "ornina-in-1"}}).encode()
        assert await post(url, other, sign(other)) == 200  # ignored

        # The sentinel: a good event is published; nothing else was before it.
        assert await post(url, good, sign(good)) == 200
        ended = json.dumps({"event": "room_finished", "room": {"name": "ornina-in-1", "sid": "RM_in1"}})
        assert await post(url, ended.encode(), sign(ended.encode())) == 200
        await published.wait_for_count(2)
    assert published.subjects == [subjects.ROOM_CREATED, subjects.ROOM_ENDED]
    created = published.bodies[0]
    assert created["region"] == "us-east" and created["sid"] == "RM_in1"
    assert created["metadata"] == {"region": "us-east", "lang": "de"}
    assert published.bodies[1] == {"v": 1, "room": "ornina-in-1", "sid": "RM_in1"}


async def test_nats_down_answers_503_so_livekit_retries(nats_server: NatsServer) -> None:
    config = ingest_config()
    async with running_ingest(ingest_settings(nats_server.url), config) as ingest:
        body = room_started("ornina-down-1", "RM_down1")
        nats_server.stop()
        assert await post(ingest.url, body, sign(body)) == 503
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{ingest.bound_port}/readyz") as resp,
        ):
            assert resp.status == 503
        nats_server.start()
        # The ingest reconnects on its own (nats-py retries every second): wait for its readiness.
        async with aiohttp.ClientSession() as session, asyncio.timeout(20):
            while True:
                async with session.get(f"http://127.0.0.1:{ingest.bound_port}/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.2)
        sentinel = room_started("ornina-down-2", "RM_down2")
        assert await post(ingest.url, sentinel, sign(sentinel)) == 200
    client = await nats.connect(nats_server.url, connect_timeout=2, max_reconnect_attempts=1)
    try:
        info = await client.jetstream().stream_info(subjects.ROOMS_STREAM)
    finally:
        await client.close()
    assert info.state.messages == 1  # only the sentinel: the refused event was never stored


async def test_the_ingest_counts_webhooks_on_its_internal_metrics_port(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """`switchboard ingest` as deployed: the webhook port answers LiveKit; /metrics is on
    SWITCHBOARD_HTTP_PORT only, and counts what became of each webhook."""
    webhook_port, probe_port = free_tcp_port(), free_tcp_port()
    proc = ServerProcess(
        "ingest",
        [SWITCHBOARD, "ingest", "--port", str(webhook_port)],
        tmp_path / "ingest.log",
        env={
            "NATS_URL": nats_server.url,
            "LIVEKIT_API_KEY": KEY,
            "LIVEKIT_API_SECRET": SECRET,
            "SWITCHBOARD_CONFIG": str(tmp_path / "absent.yaml"),
            "SWITCHBOARD_HTTP_PORT": str(probe_port),
        },
    )
    proc.start()
    try:
        proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{probe_port}/readyz"), 30)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{webhook_port}/webhook", data=b"{}") as resp:
                assert resp.status == 401  # no signature
            async with http.get(f"http://127.0.0.1:{webhook_port}/metrics") as resp:
                assert resp.status == 404  # nothing but the webhook and probes where LiveKit calls
            async with http.get(f"http://127.0.0.1:{probe_port}/metrics") as resp:
                text = await resp.text()
        counted = {
            (sample.labels["outcome"], sample.labels["reason"]): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "switchboard_webhooks_total"
        }
        assert counted == {("refused", "missing_signature"): 1.0}, text
    finally:
        proc.stop()


async def test_an_ingest_started_with_its_region_publishes_into_that_regions_streams(
    nats_server: NatsServer, nc: NATS, tmp_path: Path
) -> None:
    """`switchboard ingest --region us-east` with `state: per_region`, as README "Across regions"
    starts it: a room_started from its region's LiveKit node lands in us-east's rooms stream, homed
    in us-east (the room's metadata names no region), and nothing in the shared stream."""
    (tmp_path / "switchboard.yaml").write_text(
        "state: per_region\ndefault_region: eu-central\nregions: {eu-central: {}, us-east: {}}\n"
    )
    webhook_port, probe_port = free_tcp_port(), free_tcp_port()
    proc = ServerProcess(
        "ingest",
        [SWITCHBOARD, "ingest", "--port", str(webhook_port), "--region", "us-east"],
        tmp_path / "ingest.log",
        env={
            "NATS_URL": nats_server.url,
            "LIVEKIT_API_KEY": KEY,
            "LIVEKIT_API_SECRET": SECRET,
            "SWITCHBOARD_CONFIG": str(tmp_path / "switchboard.yaml"),
            "SWITCHBOARD_HTTP_PORT": str(probe_port),
        },
    )
    proc.start()
    us = Cell("us-east")
    try:
        proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{probe_port}/readyz"), 30)
        js = nc.jetstream()
        body = room_started("ornina-us-webhook", "RM_us1")
        # 200 only once JetStream has stored the event: it is there to read.
        assert await post(f"http://127.0.0.1:{webhook_port}/webhook", body, sign(body)) == 200
        stored = await js.get_last_msg(us.rooms_stream, us.room_created)
        event = decode(RoomCreated, stored.data or b"")
        assert (event.room, event.region) == ("ornina-us-webhook", "us-east")
        with contextlib.suppress(NotFoundError):  # the shared stream may not exist at all
            assert (await js.stream_info(subjects.ROOMS_STREAM)).state.messages == 0
    finally:
        proc.stop()
