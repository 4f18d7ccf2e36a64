"""Drills 6 (fuzzing every consumer subject and the webhook) and 7 (NATS auth, least privilege,
no secret anywhere), against the real stack. Definitions: tests/drills/harness.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import string
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nkeys  # type: ignore[import-untyped]
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from livekit import api as lkapi
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from devstack.listener import RoomListener
from devstack.nats_server import NatsServer
from devstack.ports import free_tcp_port
from devstack.process import ServerProcess, start_with_fresh_ports
from orchestrator.membership import live_members
from orchestrator.ops.census import ask_orchestrators
from orchestrator.override import OVERRIDE_KEY
from orchestrator.records import RoomRecord
from shared import bus, subjects
from shared.codec import MAX_MESSAGE_BYTES, ContractError, decode, encode
from shared.messages import AgentStatus, Message, RoomCreated, RoomEnded
from shared.nats_credentials import (
    DEFAULT_COST,
    PASSWORD_USERS,
    hash_password,
    hash_variable,
    password_variable,
    worker_nkey_variable,
)
from shared.settings import NatsSettings
from tests.drills.harness import DrillResult, Orchestrator, Stack, drill_config, save_result, stack
from tests.orchestratorkit import create_livekit_room, wait_until
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
                    await s.publish(room)
        for room in good_iter:
            await s.publish(room)
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
                    await _good_hook(http, webhook, s, room)
            for room in hook_iter:
                await _good_hook(http, webhook, s, room)
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


async def _good_hook(http: aiohttp.ClientSession, url: str, s: Stack, room: str) -> None:
    """Create the room in LiveKit, then post its room_started as LiveKit would (signed, its sid)."""
    assert s.lk is not None and s.livekit is not None
    sid = await create_livekit_room(s.lk, room)
    body = json.dumps({"event": "room_started", "room": {"name": room, "sid": sid}}).encode()
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = lkapi.AccessToken(s.livekit.api_key, s.livekit.api_secret).with_sha256(digest).to_jwt()
    status, text = await _post(http, url, body, token)
    assert status == 200, text


# ----------------------------------------------------------------------------------------------
# 7. Auth: least privilege, wrong credentials fail fast, no secret anywhere
# ----------------------------------------------------------------------------------------------

DENIED = [
    ("worker", subjects.ROOM_CREATED),
    ("worker", subjects.ROOM_ENDED),
    ("worker", subjects.ROOM_MANUAL),
    # A pool's workers speak for their own pool only (eu-central-a's here).
    ("worker", "switchboard.pools.us-east-a.heartbeat"),
    ("worker", subjects.room_status("us-east-a")),
    ("worker", subjects.ROOM_STATUS),
    ("ingest", subjects.ROOM_MANUAL),
    ("worker", "$KV.switchboard_rooms.r.ornina-forged"),
    ("ingest", subjects.ROOM_STATUS),
    ("ingest", subjects.room_status("eu-central-a")),
    ("operator", subjects.room_status("eu-central-a")),
    ("ingest", "switchboard.pools.eu-central-a.heartbeat"),
    ("orchestrator", subjects.ROOM_CREATED),
    ("orchestrator", "switchboard.pools.eu-central-a.heartbeat"),
    ("orchestrator", "switchboard.pools.eu-central-a.control"),
    ("operator", "$KV.switchboard_rooms.r.ornina-forged"),
    # The operator reads JetStream; it never purges or deletes what the orchestrators keep.
    ("operator", "$JS.API.STREAM.PURGE.KV_switchboard_rooms"),
    ("operator", "$JS.API.STREAM.DELETE.KV_switchboard_rooms"),
    ("operator", "$JS.API.CONSUMER.DELETE.SWITCHBOARD_ROOMS.orchestrator"),
    ("operator", "$JS.API.CONSUMER.CREATE.SWITCHBOARD_ROOMS.orchestrator"),
]
ALLOWED = [
    ("worker", "switchboard.pools.eu-central-a.heartbeat"),
    ("worker", subjects.room_status("eu-central-a")),
    ("ingest", subjects.ROOM_CREATED),
    ("operator", "switchboard.pools.eu-central-a.control"),
    ("operator", subjects.ROOM_MANUAL),
    ("orchestrator", "switchboard.pools.eu-central-a.presence.host-1-ab12"),
]
# Replies travel on inboxes: each user may read its own only (NATS_INBOX_PREFIX).
DENIED_SUBSCRIBE = [
    ("worker", "_INBOX_orchestrator.>"),
    ("worker", "_INBOX.>"),
    ("ingest", "_INBOX_operator.>"),
    ("operator", "_INBOX_orchestrator.>"),
    ("worker", "$KV.switchboard_rooms.>"),
]
ALLOWED_SUBSCRIBE = [
    ("worker", "_INBOX_worker.>"),
    ("worker", "switchboard.pools.eu-central-a.presence.host-1-ab12"),
    ("orchestrator", "_INBOX_orchestrator.>"),
]


# Passwords shaped to trip nats-server's config parser. It reads `password: $VAR` by parsing the
# variable's value as configuration, so with the password itself in the servers' environment (as
# accounts.conf had it) most of these stop the server ("Expected a digit but got 'a'", "interface
# conversion: interface {} is int64, not string", ...), some silently become another password
# (" x ", "x}", "\"x\"", "$OTHER", a bcrypt-shaped one) and a few only look as if they would
# (123abc, 1e5x, 0x1f, #x). The servers now get the $2a$ bcrypt hash instead, which the parser reads
# back unchanged whatever the password: every shape must simply work. Each is made on purpose
# (random parts, fixed shape), so every run of either variant covers every one of them.
def awkward_passwords() -> dict[str, str]:
    def tail() -> str:
        return secrets.token_urlsafe(12)

    def digits(n: int) -> str:
        return "".join(secrets.choice(string.digits) for _ in range(n))

    bcrypt_alphabet = "./" + string.ascii_letters + string.digits
    month = secrets.choice("123456789")
    return {
        "leading -": f"-{tail()}",  # the one in the issue: "Expected a digit"
        "negative integer": f"-{digits(14)}",
        "integer": f"{secrets.choice('123456789')}{digits(13)}",
        "integer beyond int64": digits(30),
        "size suffix": f"{digits(10)}k",  # 1k is 1000 to the parser
        "float": f"{digits(6)}.{digits(6)}",
        "exponent": f"{digits(6)}e{digits(2)}",
        "digits then letters": f"{digits(4)}e5x{tail()}",
        "hex": f"0x{secrets.token_hex(8)}",
        "ISO date": f"20{digits(2)}-0{month}-1{digits(1)}T1{digits(1)}:3{digits(1)}:4{digits(1)}Z",
        "boolean": secrets.choice(["true", "False", "yes", "NO", "on", "off"]),
        "spaces": f"{tail()} {tail()} {tail()}",
        "padded": f" {tail()} ",
        "line break": f"{tail()}\n{tail()}",
        "comment": f"#{tail()}",
        "slashes": f"//{tail()}",
        "double quote": f'"{tail()}',
        "quoted": f'"{tail()}"',
        "single quote": f"'{tail()}",
        "closing brace": f"{tail()}}}",
        "opening brace": f"{{{tail()}",
        "brackets": f"[{tail()}]",
        "semicolon": f"{tail()};{tail()}",
        "comma": f"{tail()},{tail()}",
        "key separators": f"={tail()}:",
        "backslash escapes": f"{tail()}\\t\\x{tail()}",
        # the parser would substitute that variable
        "variable reference": f"${worker_nkey_variable(WORKER_POOLS[0])}",
        "bcrypt-looking": "$2a$11$" + "".join(secrets.choice(bcrypt_alphabet) for _ in range(53)),
        "include": f"include {tail()}",
        "non-ASCII": f"pässwörd-{tail()}-ü",
        "72 bytes": (tail() * 8)[:72],  # as long as bcrypt reads
    }


# Which shapes the full stack runs with (orchestrator, ingest, operator), per drill size; every
# shape also reaches a real nats-server on its own in both sizes (_every_shape_logs_in).
STACK_SHAPES = {
    "fast": ("leading -", "integer", "spaces"),
    "full": ("size suffix", "quoted", "backslash escapes"),
}
CHECK_CREDENTIALS = REPO / "deploy" / "nats" / "check-credentials.sh"
# The worker pools accounts.conf has a NATS user for; the drill's workers are the first one's.
WORKER_POOLS = ("eu-central-a", "us-east-a")


class Credentials:
    def __init__(self, root: Path, passwords: dict[str, str] | None = None, cost: int = DEFAULT_COST) -> None:
        self.passwords = passwords or {u: secrets.token_urlsafe(24) for u in PASSWORD_USERS}
        # What the servers get: the hash of each password, never the password.
        self.hashes = {u: hash_password(pw, cost) for u, pw in self.passwords.items()}
        # One nkey per worker pool that accounts.conf names (issue 17).
        self.seeds: dict[str, str] = {}
        self.publics: dict[str, str] = {}
        self.seed_files: dict[str, Path] = {}
        for pool in WORKER_POOLS:
            seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
            self.seeds[pool] = seed.decode()
            self.publics[pool] = nkeys.from_seed(seed).public_key.decode()
            path = root / "secrets" / f"{pool}.nk"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.seeds[pool])
            path.chmod(0o600)
            self.seed_files[pool] = path
        # The drill's pool, and its workers' seed.
        self.worker_seed, self.seed_file = self.seeds[WORKER_POOLS[0]], self.seed_files[WORKER_POOLS[0]]

    def server_env(self) -> dict[str, str]:
        """What an operator puts in the servers' environment (accounts.conf reads these)."""
        env = {hash_variable(user): hashed for user, hashed in self.hashes.items()}
        env.update({worker_nkey_variable(pool): public for pool, public in self.publics.items()})
        return env

    def settings(self, url: str, who: str) -> dict[str, Any]:
        if who == "worker":  # a worker of the drill's pool, eu-central-a
            return {"url": url, "nkey_seed_file": self.seed_file}
        return {"url": url, "user": who, "password": self.passwords[who]}

    def all(self) -> list[str]:
        return [*self.passwords.values(), *self.hashes.values(), *self.seeds.values()]


@contextlib.contextmanager
def server_environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in this process's environment while a nats-server (which inherits it) starts, as in
    production; gone again before any other process starts."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_credentials(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """deploy/nats/check-credentials.sh (what runs before nats-server) on ``env``, check only."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_NATS_")}
    return subprocess.run(
        ["sh", str(CHECK_CREDENTIALS)], env={**clean, **env}, capture_output=True, text=True, timeout=30
    )


async def _every_shape_logs_in(root: Path) -> dict[str, str]:
    """Every awkward password against the real nats-server and the deployed accounts.conf, three at
    a time (one per password user): shape -> "logged in", or what went wrong (never the value)."""
    shapes = awkward_passwords()
    names = list(shapes)
    verdicts: dict[str, str] = {}
    for n, first in enumerate(range(0, len(names), len(PASSWORD_USERS))):
        group = names[first : first + len(PASSWORD_USERS)]
        group += names[: len(PASSWORD_USERS) - len(group)]  # the last group filled up with the first shapes
        creds = Credentials(
            root / f"shapes-{n}", dict(zip(PASSWORD_USERS, (shapes[g] for g in group), strict=True)), 4
        )
        env = creds.server_env()
        checked = await asyncio.to_thread(check_credentials, env)
        if checked.returncode != 0:
            verdicts.update({g: f"refused by check-credentials.sh: {checked.stderr.strip()}" for g in group})
            continue

        def make(attempt: int, n: int = n) -> NatsServer:
            data = root / f"shapes-{n}" / f"nats-{attempt}"
            data.mkdir(parents=True, exist_ok=True)
            shutil.copy(ACCOUNTS_CONF, data / "accounts.conf")
            return NatsServer(data, extra_config='include "accounts.conf"')

        with server_environment(env):
            try:
                server = await asyncio.to_thread(start_with_fresh_ports, make)
            except Exception as err:
                verdicts.update({g: f"nats-server did not start: {err}" for g in group})
                continue
        try:
            for user, shape in zip(PASSWORD_USERS, group, strict=True):
                verdicts.setdefault(shape, await _login(server.url, user, creds.passwords[user]))
        finally:
            await asyncio.to_thread(server.stop)
        assert not [s for s in creds.all() if len(s) >= 8 and s.encode() in _logs(root / f"shapes-{n}")]
    return verdicts


async def _login(url: str, user: str, password: str) -> str:
    try:
        nc = await nats.connect(
            url,
            user=user,
            password=password,
            allow_reconnect=False,
            connect_timeout=3,
            max_reconnect_attempts=0,
        )
    except Exception as err:
        return f"refused: {type(err).__name__} {err}"
    await nc.close()
    return "logged in"


def _logs(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*.log")))


def test_check_credentials_refuses_clearly_and_never_prints_a_value(tmp_path: Path) -> None:
    """What runs before nats-server: every $2a$ hash of every shape passes; a password, a $2b$/$2y$
    hash, a seed in place of the public key, or nothing is refused, naming the variable only."""
    shapes = awkward_passwords()
    good = Credentials(tmp_path, cost=4)
    for shape, password in shapes.items():
        env = {**good.server_env(), hash_variable("ingest"): hash_password(password, 4)}
        assert check_credentials(env).returncode == 0, shape
    other = hash_password("pw", 4)
    wrong: list[tuple[str, str, str]] = [
        *((shape, password, "is not a bcrypt hash") for shape, password in shapes.items()),
        ("$2b$", "$2b$" + other[4:], "$2a$ in place of"),
        ("$2y$", "$2y$" + other[4:], "$2a$ in place of"),
        ("cut short", other[:-1], "not one"),
        ("a line more", other + "\nx", "not one"),
        ("empty", "", "is not set"),
    ]
    for shape, value, words in wrong:
        if shape == "bcrypt-looking":
            continue  # a password shaped like a hash is a hash to anything but bcrypt itself
        env = {**good.server_env(), hash_variable("ingest"): value}
        done = check_credentials(env)
        assert done.returncode == 1, shape
        assert hash_variable("ingest") in done.stderr and words in done.stderr, (shape, done.stderr)
        assert len(value) < 8 or value not in done.stderr + done.stdout, shape
    pool_key = worker_nkey_variable(WORKER_POOLS[1])
    for value, words in ((good.worker_seed, "holds a seed"), ("UREPLACEWITHTHEPUBLICKEY", "not a public")):
        done = check_credentials({**good.server_env(), pool_key: value})
        assert done.returncode == 1 and words in done.stderr and value not in done.stderr
        assert pool_key in done.stderr
    unset = check_credentials({})
    assert unset.returncode == 1 and unset.stderr.count("is not set") == 3 + len(WORKER_POOLS)


def test_deploy_files_agree_on_the_nats_credentials() -> None:
    """accounts.conf, check-credentials.sh, the compose example env and the Kubernetes example
    Secrets name the same variables; the servers' Secret holds no password and no seed."""
    accounts = ACCOUNTS_CONF.read_text()
    server_vars = set(re.findall(r"(?:password|nkey): \$(\w+)", accounts))
    pool_keys = {worker_nkey_variable(p) for p in WORKER_POOLS}
    assert server_vars == {*(hash_variable(u) for u in PASSWORD_USERS), *pool_keys}
    example = dict(
        line.split("=", 1)
        for line in (REPO / "deploy" / "compose" / "example.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert server_vars | {password_variable(u) for u in PASSWORD_USERS} <= set(example)
    for name in server_vars - pool_keys:
        assert example[name].startswith("'") and example[name].endswith("'"), f"{name}: single-quote it"
    docs = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "11-secrets.example.yaml").read_text()))
    secrets_by_name = {d["metadata"]["name"]: set(d["stringData"]) for d in docs if d}
    assert secrets_by_name["switchboard-nats-server"] == server_vars
    assert secrets_by_name["switchboard-nats"] == {password_variable(u) for u in PASSWORD_USERS}
    nats = next(
        d
        for d in yaml.safe_load_all((REPO / "deploy" / "k8s" / "20-nats.yaml").read_text())
        if d["kind"] == "StatefulSet"
    )
    (container,) = nats["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "switchboard-nats-server"}}]
    assert (
        container["command"][-1] == "/etc/nats/check-credentials.sh" and container["args"][0] == "nats-server"
    )
    script = CHECK_CREDENTIALS.read_text()
    assert f"for user in {' '.join(u.upper() for u in PASSWORD_USERS)}; do" in script
    assert 'name="SWITCHBOARD_NATS_${user}_PASSWORD_HASH"' in script
    assert "grep -o '\\$SWITCHBOARD_NATS_WORKER_[A-Z0-9_]*_NKEY' \"$accounts\"" in script


AUTH_SIZES = [
    pytest.param(("fast", 6), id="fast"),
    pytest.param(("full", 40), id="full", marks=[pytest.mark.drill, pytest.mark.timeout(900)]),
]


@pytest.mark.parametrize("size", AUTH_SIZES)
async def test_drill_7_auth_least_privilege_and_no_secrets(size: tuple[str, int], tmp_path: Path) -> None:
    name, count = size
    result = DrillResult("7 NATS auth: least privilege, wrong credentials, no secret leaks", name)
    started = time.monotonic()
    # First every awkward password shape, each against a real nats-server of its own.
    shapes = await _every_shape_logs_in(tmp_path / "shapes")
    # Then the whole stack, its three password users on three of the shapes.
    stack_shapes = dict(zip(PASSWORD_USERS, STACK_SHAPES[name], strict=True))
    every = awkward_passwords()
    creds = Credentials(tmp_path, {user: every[shape] for user, shape in stack_shapes.items()})
    rooms = [f"ornina-d7-{i}" for i in range(count)]
    result.notes.append(
        "every process authenticated with the deployed deploy/nats/accounts.conf: orchestrator, ingest "
        "and operator (the drill's own client) by password (the servers hold only its bcrypt hash), "
        "workers by nkey"
    )
    result.notes.append(
        "password_shapes: passwords nats-server's config parser misreads when they are in its "
        "environment themselves, each made on purpose, each logged in with against a real nats-server "
        "given only its $2a$ hash; stack_password_shapes: the shapes the whole stack ran on"
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
        # nats-server (started first, inheriting this environment) gets the hashes from its
        # environment, as in production; they are gone again before any other process starts.
        assert check_credentials(creds.server_env()).returncode == 0
        with server_environment(creds.server_env()):
            await s.start(drill_config())
        url = s.nats_url
        await s.start_pool(
            "eu-central-a",
            "eu-central",
            # The drill's rooms, and those of its later cases (override, slow clients, LiveKit secret).
            capacity=count + 10,
            env={"NATS_NKEY_SEED_FILE": str(creds.seed_file), "NATS_INBOX_PREFIX": "_INBOX_worker"},
        )
        await s.start_orchestrators(1)
        webhook = await s.start_ingest(
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
        census = await _census_as_operator(url, creds)
        forgeries = await _forge_reports(s, creds, url, rooms[0])
        override = await _override_in_room_metadata(s)
        slow_clients = await _slow_clients_beside_a_webhook(s, webhook)
        bad_secret = await _wrong_livekit_secret_beside_a_good_one(s, wrong)

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
        doctor_code, doctor_output = await _doctor_with(
            s,
            {"NATS_USER": "orchestrator", "NATS_PASSWORD": wrong, "NATS_INBOX_PREFIX": "_INBOX_orchestrator"},
        )
        doctor_leaks = [f"secret #{i}" for i, x in enumerate(s.secrets) if len(x) >= 8 and x in doctor_output]
        result.extra.update(
            {
                "password_shapes": shapes,
                "stack_password_shapes": stack_shapes,
                "wrong_password_doctor": {
                    "exit": doctor_code,
                    "lines": [
                        ln.strip()
                        for ln in doctor_output.splitlines()
                        if "NATS credentials" in ln or "fix:" in ln
                    ][:2],
                },
                "denied": denied,
                "allowed": allowed,
                "subscribe_denied": subscribe_denied,
                "subscribe_allowed": subscribe_allowed,
                "operator_pool_census": census,
                "forged_reports": forgeries,
                "override_in_room_metadata": override,
                "slow_clients_beside_a_webhook": slow_clients,
                "wrong_livekit_secret_beside_a_good_replica": bad_secret,
                "wrong_password_in_process": {"seconds": round(in_process_s, 2), "message": in_process_error},
                "wrong_password_cli": {"exit": cli_code, "seconds": round(cli_s, 2), "last_line": cli_output},
            }
        )
    finally:
        await s.stop()
    result.extra["secret_leaks"] = s.scan_secrets()
    result.duration_s = time.monotonic() - started
    save_result(result)
    assert shapes and all(v == "logged in" for v in shapes.values()), shapes
    assert set(shapes) == set(awkward_passwords()), "every shape reached a server"
    assert doctor_code == 1 and "✘ NATS credentials" in doctor_output, doctor_output
    assert hash_variable("orchestrator") in doctor_output and not doctor_leaks, doctor_output
    assert all(v.startswith("denied") for v in denied.values()), denied
    assert all(v == "allowed" for v in allowed.values()), allowed
    assert all(v.startswith("denied") for v in subscribe_denied.values()), subscribe_denied
    assert all(v == "allowed" for v in subscribe_allowed.values()), subscribe_allowed
    assert forged["ornina-forged"] is None
    # Forged reports from eu-central-a's worker: nobody removed, the room did not move.
    assert forgeries["participants_after"] == forgeries["participants_before"], forgeries
    assert forgeries["attempt_after"] == forgeries["attempt_before"], forgeries
    assert forgeries["refusals_noted"] and forgeries["mismatch_dropped"], forgeries
    # An override in room metadata (anyone who can set it) is not obeyed: the rule's agent serves it.
    assert override["pool"] == WORKER_POOLS[0] and not override["manual"] and not override["override_agent"]
    assert slow_clients["webhook_served_s"] < 1.0, slow_clients
    assert bad_secret["failed"] == 0 and bad_secret["live"] == bad_secret["rooms"], bad_secret
    assert bad_secret["members"] == 1 and not bad_secret["bad_replica_ready"], bad_secret
    # `switchboard status` as the operator: the orchestrator may answer it, and only it.
    assert census == {"eu-central-a": "alive"}, census
    assert "authorization violation" in in_process_error and in_process_s < 10
    assert cli_code not in (0, None) and cli_s < 20 and "authorization violation" in cli_output.lower()
    assert result.lost == 0 and result.live_at_end == result.rooms_sent, result.summary()
    assert result.double_agents == 0
    assert not result.extra["secret_leaks"], result.extra["secret_leaks"]


async def _forge_reports(s: Stack, creds: Credentials, url: str, room: str) -> dict[str, Any]:
    """As eu-central-a's worker (its own NATS user, its own report subject): a stale ``joined``
    naming a caller in the room, one naming the room's current agent, and an ``error`` for the
    room's current dispatch in another pool's name. What LiveKit and the record show after."""
    assert s.lk is not None and s.kv is not None and s.livekit is not None
    rec = (await s.records([room]))[room]
    assert rec is not None and rec.identity and rec.dispatch_id
    caller = RoomListener(s.livekit, room, identity="caller-d7")
    await caller.connect()
    try:
        before = await _participants(s.lk, room)
        pool = WORKER_POOLS[0]

        def status(**fields: Any) -> AgentStatus:
            return AgentStatus(
                room=room, attempt=rec.attempt, worker="forger", at=datetime.now(UTC), **fields
            )

        forged = [
            status(dispatch_id="AD_forged_caller", pool=pool, state="joined", identity="caller-d7"),
            status(dispatch_id="AD_forged_agent", pool=pool, state="joined", identity=rec.identity),
            status(dispatch_id=rec.dispatch_id, pool=WORKER_POOLS[1], state="error", reason="forged"),
        ]
        async with _as_user(url, creds, "worker") as (nc, errors):
            for i, st in enumerate(forged):  # core publishes: the stream takes them all the same
                await nc.publish(
                    subjects.room_status(pool), encode(st), headers={subjects.MSG_ID_HEADER: f"d7-forged-{i}"}
                )
        # The orchestrator says in the room's timeline whom it did not remove, and logs the drop.
        named = ("caller-d7", rec.identity)

        def refused(r: RoomRecord) -> bool:
            notes = " ".join(h.detail for h in r.history if "not removed:" in h.detail)
            return all(identity in notes for identity in named)

        after = await wait_until(s.kv, room, refused, "refusals noted", 30)
        log = s.root / "logs" / "orchestrator-1.log"
        dropped = f"dropped a message on {subjects.room_status(pool)}"
        async with asyncio.timeout(30):
            while dropped not in log.read_text(errors="replace"):  # noqa: ASYNC110 (a subprocess's log)
                await asyncio.sleep(0.1)
        return {
            "participants_before": before,
            "participants_after": await _participants(s.lk, room),
            "attempt_before": rec.attempt,
            "attempt_after": after.attempt,
            "state_after": after.state.value,
            "refusals_noted": [h.detail for h in after.history if "not removed:" in h.detail],
            "mismatch_dropped": True,
            "nats_errors": errors,
        }
    finally:
        await caller.close()


async def _override_in_room_metadata(s: Stack) -> dict[str, Any]:
    """A room event whose metadata asks for another agent and pool, published on
    switchboard.rooms.created as a backend would (here by the drill's operator client)."""
    assert s.js is not None and s.lk is not None and s.kv is not None
    room = "ornina-d7-override"
    sid = await create_livekit_room(s.lk, room)
    asked = {"agent": "someone-elses-agent", "pool": WORKER_POOLS[1], "requested_by": "a caller"}
    await bus.publish_room_created(s.js, RoomCreated(room=room, sid=sid, metadata={OVERRIDE_KEY: asked}))
    rec = await wait_until(s.kv, room, lambda r: r.dispatch_id is not None, "dispatched", 60)
    return {
        "asked": asked,
        "agent": rec.agent,
        "pool": rec.pool,
        "manual": rec.manual,
        "override_agent": rec.override_agent,
    }


async def _slow_clients_beside_a_webhook(s: Stack, webhook: str) -> dict[str, Any]:
    """Twenty connections from another address that send half a request head and stop (slow
    loris) against the deployed ingest; a signed webhook beside them, timed."""
    port = int(webhook.split(":")[2].split("/")[0])
    held = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        writer.write(b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        held.append((reader, writer))
    try:
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as http:
            await _good_hook(http, webhook, s, "ornina-d7-beside-slow")
        served_s = time.monotonic() - t0
        t1 = time.monotonic()
        async with asyncio.timeout(30):  # ingest.idle_timeout_s (10 s) closes each one
            for reader, _ in held:
                await reader.read()
        return {
            "stalled": len(held),
            "webhook_served_s": round(served_s, 3),
            "closed_after_s": round(time.monotonic() - t1, 1),
        }
    finally:
        for _, writer in held:
            writer.close()


async def _wrong_livekit_secret_beside_a_good_one(s: Stack, wrong: str) -> dict[str, Any]:
    """A second orchestrator replica with a wrong LiveKit secret (a bad rollout) beside the good
    one: it takes no part, and no room fails."""
    assert s.livekit is not None and s.js is not None
    port = free_tcp_port()
    proc = ServerProcess(
        "orchestrator-bad-livekit-secret",
        [SWITCHBOARD, "orchestrator", "--config", str(s.config_path)],
        s.root / "logs" / "orchestrator-bad-livekit-secret.log",
        env={
            **s.base_env(),
            **s.nats_env,
            "LIVEKIT_URL": s.livekit.http_url,
            "LIVEKIT_API_SECRET": wrong,
            "SWITCHBOARD_HTTP_PORT": str(port),
        },
    )
    proc.start()
    try:
        async with asyncio.timeout(60):
            while "LiveKit rejects this replica's API credentials" not in proc.log_tail(200):  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        rooms = [f"ornina-d7-badsecret-{i}" for i in range(6)]
        await s.publish_all(rooms)
        records = await s.wait_settled(rooms, 120)
        ready = Orchestrator("bad", proc, port).ready()
        members = await live_members(s.js)
        states = [records[name].state.value if records.get(name) else "none" for name in rooms]
        return {
            "rooms": len(rooms),
            "states": dict(Counter(states)),
            "live": sum(1 for state in states if state in ("joined", "speaking")),
            "failed": states.count("failed"),
            "members": len(members),
            "bad_replica_ready": ready,
        }
    finally:
        proc.stop()


async def _participants(lk: lkapi.LiveKitAPI, room: str) -> list[str]:
    listed = await lk.room.list_participants(lkapi.ListParticipantsRequest(room=room))
    return sorted(p.identity for p in listed.participants)


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


async def _census_as_operator(url: str, creds: Credentials) -> dict[str, str]:
    """The pool census an orchestrator answers the operator with (allow_responses, the operator's
    own inbox): pool -> liveness; empty when nobody answered."""
    opts = creds.settings(url, "operator")
    nc = await nats.connect(
        url,
        user=opts["user"],
        password=opts["password"],
        inbox_prefix="_INBOX_operator",
        max_reconnect_attempts=1,
        connect_timeout=2,
    )
    try:
        answered = await ask_orchestrators(nc, timeout_s=5)
    finally:
        await nc.close()
    return {v.pool: v.liveness for v in answered[1]} if answered else {}


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


async def _doctor_with(s: Any, env: dict[str, str]) -> tuple[int | None, str]:
    """``switchboard doctor`` with these NATS credentials: its exit code and everything it printed."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "SWITCHBOARD_NATS_"))}
    proc = await asyncio.create_subprocess_exec(
        SWITCHBOARD,
        "doctor",
        "--config",
        str(s.config_path),
        env={**clean, **s.base_env(), "LIVEKIT_URL": s.livekit.http_url, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(errors="replace")


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
