"""Drills 6 (fuzzing every consumer subject and the webhook) and 7 (NATS auth, least privilege,
no secret anywhere), against the real stack. Definitions: tests/drills/harness.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nkeys  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from livekit import api as lkapi
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from orchestrator.devstack.process import ServerProcess
from shared import bus, subjects
from shared.codec import MAX_MESSAGE_BYTES, ContractError, decode
from shared.messages import AgentStatus, Message, RoomCreated, RoomEnded
from shared.settings import NatsSettings
from tests.drills.harness import DrillResult, Stack, drill_config, save_result, stack
from tests.workerkit import SWITCHBOARD

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ACCOUNTS_CONF = REPO / "deploy" / "nats" / "accounts.conf"

# ----------------------------------------------------------------------------------------------
# 6. Fuzz every consumer subject and the webhook
# ----------------------------------------------------------------------------------------------

TEMPLATES: dict[str, tuple[type[Message], dict[str, Any]]] = {
    subjects.ROOM_CREATED: (RoomCreated, {"v": 1, "room": "fuzz-room", "region": "eu-central"}),
    subjects.ROOM_ENDED: (RoomEnded, {"v": 1, "room": "fuzz-room"}),
    subjects.ROOM_STATUS: (
        AgentStatus,
        {
            "v": 1,
            "room": "fuzz-room",
            "dispatch_id": "AD_fuzz",
            "attempt": 1,
            "pool": "eu-central-a",
            "worker": "w1",
            "state": "joined",
            "at": "2026-01-01T00:00:00Z",
        },
    ),
}

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=24),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _payloads(template: dict[str, Any]) -> st.SearchStrategy[bytes]:
    keys = [*template, "v", "unknown_field"]
    mutated = st.tuples(st.sampled_from(keys), _json).map(lambda kv: {**template, kv[0]: kv[1]})
    dropped = st.sampled_from(list(template)).map(lambda k: {x: y for x, y in template.items() if x != k})
    oversized = st.integers(MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 4000).map(
        lambda n: {**template, "room": "x" * n}
    )
    return st.one_of(
        st.binary(max_size=200),
        _json.map(lambda v: json.dumps(v).encode()),
        st.one_of(mutated, dropped, oversized).map(lambda d: json.dumps(d).encode()),
        st.text(max_size=100).map(str.encode),
    )


def _generate(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """``count`` cases drawn by hypothesis (generation only: nothing to shrink, nothing stored)."""
    cases: list[Any] = []

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case: Any) -> None:
        cases.append(case)

    collect()
    return cases


def _webhook_cases(key: str, secret: str) -> st.SearchStrategy[tuple[bytes, str | None]]:
    def signed(body: bytes, k: str = key, s: str = secret) -> str:
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        return lkapi.AccessToken(k, s).with_sha256(digest).to_jwt()

    bodies = st.one_of(
        st.binary(max_size=300),
        _json.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"event": st.sampled_from(["room_started", "room_finished", "participant_joined"]), "room": _json}
        ).map(lambda d: json.dumps(d).encode()),
    )
    return st.one_of(
        st.tuples(bodies, st.none()),  # unsigned
        st.tuples(
            bodies, st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
        ),  # garbage
        bodies.map(lambda b: (b, signed(b, s="wrong-secret-0123456789-abcdefghijkl"))),  # forged
        bodies.map(lambda b: (b, signed(b + b"x"))),  # body changed after signing
        bodies.map(lambda b: (b, signed(b))),  # signed, but not an event we can take
    )


FUZZ_SIZES = [
    pytest.param(("fast", 60), id="fast"),
    pytest.param(("full", 2600), id="full", marks=[pytest.mark.drill, pytest.mark.timeout(900)]),
]


@pytest.mark.parametrize("size", FUZZ_SIZES)
async def test_drill_6_fuzz_consumers_and_webhook(size: tuple[str, int], tmp_path: Path) -> None:
    name, per_target = size
    result = DrillResult("6 fuzz rooms.created / rooms.ended / rooms.status / webhook", name)
    started = time.monotonic()
    cases = {subject: _generate(_payloads(t), per_target) for subject, (_, t) in TEMPLATES.items()}
    good_rooms = [f"ornina-d6-{i}" for i in range(6 if name == "fast" else 20)]
    hook_rooms = [f"ornina-d6-hook-{i}" for i in range(3 if name == "fast" else 10)]
    config = {**drill_config(), "ingest": {"host": "127.0.0.1", "port": 0, "max_body_bytes": 16384}}
    async with stack(tmp_path, config) as s:
        assert s.livekit is not None and s.nc is not None and s.js is not None
        hook_cases = _generate(_webhook_cases(s.livekit.api_key, s.livekit.api_secret), per_target)
        await s.start_pool("eu-central-a", "eu-central", capacity=len(good_rooms) + len(hook_rooms) + 2)
        (orch,) = await s.start_orchestrators(1)
        webhook = await s.start_ingest()
        dead: list[tuple[str, str]] = []
        everything_dead = asyncio.Event()
        expected_bad: Counter[str] = Counter()
        for subject, payloads in cases.items():
            model = TEMPLATES[subject][0]
            for data in payloads:
                try:
                    decode(model, data)
                except ContractError:
                    expected_bad[subject] += 1

        async def on_dead(msg: Msg) -> None:
            dead.append((msg.subject, (msg.headers or {}).get(subjects.REJECT_REASON_HEADER, "")))
            if len(dead) >= sum(expected_bad.values()):
                everything_dead.set()

        sub = await s.nc.subscribe(subjects.DEAD_LETTER + ".>", cb=on_dead)
        # Bad and good interleaved: a good room event after every tenth fuzz case.
        good_iter = iter(good_rooms)
        sent = 0
        for subject, payloads in cases.items():
            for i, data in enumerate(payloads):
                await s.js.publish(subject, data, headers={subjects.MSG_ID_HEADER: f"fuzz-{subject}-{i}"})
                sent += 1
                if sent % max(1, (3 * per_target) // len(good_rooms)) == 0 and (
                    room := next(good_iter, None)
                ):
                    await bus.publish_room_created(s.js, RoomCreated(room=room, region="eu-central"))
        for room in good_iter:
            await bus.publish_room_created(s.js, RoomCreated(room=room, region="eu-central"))
        statuses: Counter[int] = Counter()
        unexplained: list[int] = []
        async with aiohttp.ClientSession() as http:
            hook_iter = iter(hook_rooms)
            for i, (body, auth) in enumerate(hook_cases):
                status, text = await _post(http, webhook, body, auth)
                statuses[status] += 1
                if status >= 500 or (status != 200 and "error" not in text):
                    unexplained.append(status)
                if i % max(1, per_target // len(hook_rooms)) == 0 and (room := next(hook_iter, None)):
                    await _good_hook(http, webhook, room, s.livekit.api_key, s.livekit.api_secret)
            for room in hook_iter:
                await _good_hook(http, webhook, room, s.livekit.api_key, s.livekit.api_secret)
        try:
            async with asyncio.timeout(120):
                await everything_dead.wait()
        except TimeoutError:
            pass
        records = await s.wait_settled(good_rooms + hook_rooms, 120)
        await sub.unsubscribe()
        await s.finish(result, good_rooms + hook_rooms, records)
        alive = orch.process.running and orch.ready() and s.ingest is not None and s.ingest.running
    total = sum(len(v) for v in cases.values()) + len(hook_cases)
    got_dead = Counter(subj for subj, _ in dead)
    result.extra.update(
        {
            "fuzz_cases": total,
            "nats_cases_rejected_expected": dict(expected_bad),
            "dead_lettered": {k.rsplit(".", 1)[-1]: v for k, v in got_dead.items()},
            "dead_letters_without_reason": sum(1 for _, reason in dead if not reason.strip()),
            "webhook_statuses": {str(k): v for k, v in sorted(statuses.items())},
            "webhook_unexplained": len(unexplained),
            "processes_alive": alive,
        }
    )
    result.notes.append(
        "rooms: the good room events and signed room_started webhooks sent between the fuzz cases; "
        "a NATS case is 'bad' when the codec refuses it, and must be dead-lettered with a reason"
    )
    result.duration_s = time.monotonic() - started
    save_result(result)
    assert alive, "the orchestrator and the ingest kept running"
    assert len(dead) == sum(expected_bad.values()), result.summary()
    assert result.extra["dead_letters_without_reason"] == 0
    assert not unexplained, f"webhook answers without a reason or 5xx: {Counter(unexplained)}"
    assert result.lost == 0 and result.live_at_end == result.rooms_sent, result.summary()
    assert result.double_agents == 0 and not result.extra["secret_leaks"], result.summary()
    if name == "full":
        assert total >= 10_000


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, auth: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/webhook+json"}
    if auth is not None:
        headers["Authorization"] = auth.replace("\r", " ").replace("\n", " ")
    async with asyncio.timeout(10), http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.text()


async def _good_hook(http: aiohttp.ClientSession, url: str, room: str, key: str, secret: str) -> None:
    body = json.dumps({"event": "room_started", "room": {"name": room, "sid": f"RM_{room}"}}).encode()
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    status, text = await _post(http, url, body, lkapi.AccessToken(key, secret).with_sha256(digest).to_jwt())
    assert status == 200, text


# ----------------------------------------------------------------------------------------------
# 7. Auth: least privilege, wrong credentials fail fast, no secret anywhere
# ----------------------------------------------------------------------------------------------

DENIED = [
    ("worker", subjects.ROOM_CREATED),
    ("worker", subjects.ROOM_ENDED),
    ("worker", "$KV.switchboard_rooms.r.ornina-forged"),
    ("ingest", subjects.ROOM_STATUS),
    ("ingest", "switchboard.pools.eu-central-a.heartbeat"),
    ("orchestrator", subjects.ROOM_CREATED),
    ("operator", "$KV.switchboard_rooms.r.ornina-forged"),
]
ALLOWED = [
    ("worker", "switchboard.pools.eu-central-a.heartbeat"),
    ("ingest", subjects.ROOM_CREATED),
    ("operator", "switchboard.pools.eu-central-a.control"),
]
# Replies travel on inboxes: each user may read its own only (NATS_INBOX_PREFIX).
DENIED_SUBSCRIBE = [
    ("worker", "_INBOX_orchestrator.>"),
    ("worker", "_INBOX.>"),
    ("ingest", "_INBOX_operator.>"),
    ("operator", "_INBOX_orchestrator.>"),
    ("worker", "$KV.switchboard_rooms.>"),
]
ALLOWED_SUBSCRIBE = [("worker", "_INBOX_worker.>"), ("orchestrator", "_INBOX_orchestrator.>")]


class Credentials:
    def __init__(self, root: Path) -> None:
        self.passwords = {u: secrets.token_urlsafe(24) for u in ("orchestrator", "ingest", "operator")}
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
        self.worker_seed = seed.decode()
        self.worker_public = nkeys.from_seed(seed).public_key.decode()
        self.seed_file = root / "secrets" / "worker.nk"
        self.seed_file.parent.mkdir(parents=True, exist_ok=True)
        self.seed_file.write_text(self.worker_seed)
        self.seed_file.chmod(0o600)

    def server_env(self) -> dict[str, str]:
        """What an operator puts in the server's environment (accounts.conf reads these)."""
        env = {f"SWITCHBOARD_NATS_{user.upper()}_PASSWORD": pw for user, pw in self.passwords.items()}
        env["SWITCHBOARD_NATS_WORKER_NKEY"] = self.worker_public
        return env

    def settings(self, url: str, who: str) -> dict[str, Any]:
        if who == "worker":
            return {"url": url, "nkey_seed_file": self.seed_file}
        return {"url": url, "user": who, "password": self.passwords[who]}

    def all(self) -> list[str]:
        return [*self.passwords.values(), self.worker_seed]


AUTH_SIZES = [
    pytest.param(("fast", 6), id="fast"),
    pytest.param(("full", 40), id="full", marks=[pytest.mark.drill, pytest.mark.timeout(900)]),
]


@pytest.mark.parametrize("size", AUTH_SIZES)
async def test_drill_7_auth_least_privilege_and_no_secrets(size: tuple[str, int], tmp_path: Path) -> None:
    name, count = size
    result = DrillResult("7 NATS auth: least privilege, wrong credentials, no secret leaks", name)
    started = time.monotonic()
    creds = Credentials(tmp_path)
    rooms = [f"ornina-d7-{i}" for i in range(count)]
    result.notes.append(
        "every process authenticated with the deployed deploy/nats/accounts.conf: orchestrator, ingest "
        "and operator (the drill's own client) by password, workers by nkey"
    )
    s = Stack(tmp_path, nats_extra='include "accounts.conf"')
    (tmp_path / "nats").mkdir(parents=True, exist_ok=True)
    shutil.copy(ACCOUNTS_CONF, tmp_path / "nats" / "accounts.conf")  # the deployed file, as is
    s.client_auth = {
        "user": "operator",
        "password": creds.passwords["operator"],
        "inbox_prefix": "_INBOX_operator",
    }
    s.nats_env = {
        "NATS_USER": "orchestrator",
        "NATS_PASSWORD": creds.passwords["orchestrator"],
        "NATS_INBOX_PREFIX": "_INBOX_orchestrator",
    }
    s.secrets += creds.all()
    wrong = secrets.token_urlsafe(24)
    s.secrets.append(wrong)
    try:
        # nats-server (started first, inheriting this environment) gets the credentials from its
        # environment, as in production; they are gone again before any other process starts.
        os.environ.update(creds.server_env())
        try:
            await s.start(drill_config())
        finally:
            for key in creds.server_env():
                os.environ.pop(key, None)
        url = s.nats_url
        await s.start_pool(
            "eu-central-a",
            "eu-central",
            capacity=count + 2,
            env={"NATS_NKEY_SEED_FILE": str(creds.seed_file), "NATS_INBOX_PREFIX": "_INBOX_worker"},
        )
        await s.start_orchestrators(1)
        await s.start_ingest(
            env={
                "NATS_USER": "ingest",
                "NATS_PASSWORD": creds.passwords["ingest"],
                "NATS_INBOX_PREFIX": "_INBOX_ingest",
            }
        )
        await s.publish_all(rooms)
        records = await s.wait_settled(rooms, 120)
        await s.finish(result, rooms, records)

        denied = {
            f"{who} -> {subject}": await _try_publish(url, creds, who, subject) for who, subject in DENIED
        }
        allowed = {
            f"{who} -> {subject}": await _try_publish(url, creds, who, subject, "ornina-d7-allowed")
            for who, subject in ALLOWED
        }
        subscribe_denied = {
            f"{who} reads {subject}": await _try_subscribe(url, creds, who, subject)
            for who, subject in DENIED_SUBSCRIBE
        }
        subscribe_allowed = {
            f"{who} reads {subject}": await _try_subscribe(url, creds, who, subject)
            for who, subject in ALLOWED_SUBSCRIBE
        }
        forged = await s.records(["ornina-forged"])

        t0 = time.monotonic()
        try:
            await bus.connect(
                NatsSettings(url=url, user="orchestrator", password=wrong, startup_attempts=2), "drill-wrong"
            )
            in_process_error = "connected with a wrong password"
        except bus.NatsUnavailableError as err:
            in_process_error = str(err)
        in_process_s = time.monotonic() - t0
        cli_code, cli_output, cli_s = await _orchestrator_with(
            s, {"NATS_USER": "orchestrator", "NATS_PASSWORD": wrong}
        )
        result.extra.update(
            {
                "denied": denied,
                "allowed": allowed,
                "subscribe_denied": subscribe_denied,
                "subscribe_allowed": subscribe_allowed,
                "wrong_password_in_process": {"seconds": round(in_process_s, 2), "message": in_process_error},
                "wrong_password_cli": {"exit": cli_code, "seconds": round(cli_s, 2), "last_line": cli_output},
            }
        )
    finally:
        await s.stop()
    result.extra["secret_leaks"] = s.scan_secrets()
    result.duration_s = time.monotonic() - started
    save_result(result)
    assert all(v.startswith("denied") for v in denied.values()), denied
    assert all(v == "allowed" for v in allowed.values()), allowed
    assert all(v.startswith("denied") for v in subscribe_denied.values()), subscribe_denied
    assert all(v == "allowed" for v in subscribe_allowed.values()), subscribe_allowed
    assert forged["ornina-forged"] is None
    assert "authorization violation" in in_process_error and in_process_s < 10
    assert cli_code not in (0, None) and cli_s < 20 and "authorization violation" in cli_output.lower()
    assert result.lost == 0 and result.live_at_end == result.rooms_sent, result.summary()
    assert result.double_agents == 0
    assert not result.extra["secret_leaks"], result.extra["secret_leaks"]


@contextlib.asynccontextmanager
async def _as_user(url: str, creds: Credentials, who: str) -> AsyncIterator[tuple[NATS, list[str]]]:
    """A plain client with ``who``'s credentials, and the asynchronous errors the server sends it."""
    errors: list[str] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(str(exc))

    opts = creds.settings(url, who)
    auth: dict[str, Any] = (
        {"nkeys_seed": str(opts["nkey_seed_file"])}
        if who == "worker"
        else {"user": opts["user"], "password": opts["password"]}
    )
    nc = await nats.connect(url, error_cb=error_cb, max_reconnect_attempts=1, connect_timeout=2, **auth)
    try:
        yield nc, errors
        # The server answers a forbidden publish or subscription with an asynchronous -ERR, which
        # arrives before the PONG of the flush that follows.
        await nc.flush(timeout=5)
        await nc.flush(timeout=5)
    finally:
        await nc.close()


def _verdict(errors: list[str], what: str) -> str:
    violations = [e for e in errors if f"permissions violation for {what}" in e.lower()]
    return f"denied ({violations[0]})" if violations else "allowed"


async def _try_publish(
    url: str, creds: Credentials, who: str, subject: str, room: str = "ornina-forged"
) -> str:
    async with _as_user(url, creds, who) as (nc, errors):
        await nc.publish(subject, json.dumps({"v": 1, "room": room}).encode())
    return _verdict(errors, "publish")


async def _try_subscribe(url: str, creds: Credentials, who: str, subject: str) -> str:
    async with _as_user(url, creds, who) as (nc, errors):
        await nc.subscribe(subject)
    return _verdict(errors, "subscription")


async def _orchestrator_with(s: Any, env: dict[str, str]) -> tuple[int | None, str, float]:
    """Start ``switchboard orchestrator`` with these NATS credentials; how it ends, and how fast."""
    log = s.root / "logs" / "orchestrator-wrong-credentials.log"
    proc = ServerProcess(
        "orchestrator-wrong",
        [SWITCHBOARD, "orchestrator", "--config", str(s.config_path)],
        log,
        env={**s.base_env(), "LIVEKIT_URL": s.livekit.http_url, **env},
    )
    t0 = time.monotonic()
    proc.start()
    assert proc.proc is not None
    try:
        code = await asyncio.wait_for(asyncio.to_thread(proc.proc.wait), 30)
    except TimeoutError:
        proc.stop()
        code = None
    lines = [ln for ln in proc.log_tail(20).splitlines() if ln.strip()]
    last = next((ln for ln in reversed(lines) if "nats" in ln.lower()), lines[-1] if lines else "")
    return code, last[-300:], time.monotonic() - t0
