"""`doctor`'s checks over hand-made facts: each misconfiguration is one row."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.ops.doctor_checks import (
    CheckResult,
    Facts,
    LiveKitProbe,
    OtlpProbe,
    check_replicas,
    exit_code,
    run_checks,
)
from orchestrator.scheduler import Liveness, PoolView
from shared import subjects
from shared.config import Rule
from shared.nats_credentials import CredentialProblem, refused_hint
from shared.settings import NatsSettings

AGENT = "ornina-avatar-agent"


def pool(pool: str, agent: str = AGENT, liveness: Liveness = "alive", draining: bool = False) -> PoolView:
    return PoolView(
        pool=pool,
        agent=agent,
        region="eu-central",
        agent_name=subjects.pool_agent_name(agent, pool),
        workers=0 if liveness == "dead" else 1,
        capacity=4,
        active=0,
        load=0.0,
        draining=draining,
        liveness=liveness,
        age_s=None if liveness == "dead" else 0.5,
    )


HEALTHY = Facts(
    nats_url="nats://127.0.0.1:4222",
    streams={s: True for s in (subjects.ROOMS_STREAM, subjects.STATUS_STREAM, subjects.DEAD_LETTER_STREAM)},
    consumers={f"{s}/orchestrator": True for s in (subjects.ROOMS_STREAM, subjects.STATUS_STREAM)},
    bucket=True,
    livekit=LiveKitProbe("http://127.0.0.1:7880"),
    pools=[pool("eu-central-a")],
    rules=[Rule(name="ornina", match="ornina-*", agent=AGENT)],
    otlp=None,
    replicas=["host-1-a1", "host-2-b2"],
    resync={
        "owner": "r1",
        "at": 1000.0,
        "rooms": 3,
        "found": 0,
        "ended": 0,
        "agent_lost": 0,
    },
    resync_interval_s=5.0,
    now=1002.0,
)
RESYNC = "resync (LiveKit's rooms against the records)"


def failing(results: list[CheckResult]) -> list[str]:
    return [r.name for r in results if r.ok is False]


def test_healthy_is_all_green() -> None:
    results = run_checks(HEALTHY)
    assert failing(results) == [] and exit_code(results) == 0
    assert all(r.ok for r in results)


@pytest.mark.parametrize(
    ("facts", "failed", "words"),
    [
        (
            replace(HEALTHY, nats_error="cannot connect to NATS at nats://x:1"),
            ["NATS reachable"],
            "nats-server",
        ),
        (replace(HEALTHY, jetstream_error="JetStream is not available"), ["JetStream enabled"], "-js"),
        (
            replace(HEALTHY, streams={**HEALTHY.streams, subjects.ROOMS_STREAM: False}),
            [f"stream {subjects.ROOMS_STREAM}"],
            "orchestrator",
        ),
        (
            replace(HEALTHY, consumers={f"{subjects.STATUS_STREAM}/orchestrator": True}),
            [f"consumer {subjects.ROOMS_STREAM}/orchestrator"],
            "switchboard orchestrator",
        ),
        (replace(HEALTHY, bucket=False), [f"KV bucket {subjects.ROOMS_BUCKET}"], "orchestrator"),
        (
            replace(
                HEALTHY, livekit=LiveKitProbe("http://x", "unauthenticated", "rejected the API credentials")
            ),
            ["LiveKit credentials"],
            "LIVEKIT_API_SECRET",
        ),
        (
            replace(HEALTHY, livekit=LiveKitProbe("http://x", "unreachable", "cannot connect to LiveKit")),
            ["LiveKit reachable"],
            "LIVEKIT_URL",
        ),
        (
            replace(HEALTHY, pools=[]),
            ["pools heartbeating", "rule ornina has a live pool"],
            "switchboard worker",
        ),
        (
            replace(HEALTHY, pools=[pool("eu-central-a", draining=True)]),
            ["rule ornina has a live pool"],
            "draining",
        ),
        (
            replace(HEALTHY, pools=[pool("eu-central-a"), pool("eu-central-b", liveness="dead")]),
            ["pool eu-central-b"],
            "silent",
        ),
        (
            replace(HEALTHY, rules=[*HEALTHY.rules, Rule(name="support", match="support-*", agent="helper")]),
            ["rule support has a live pool"],
            "--agent helper",
        ),
        (
            # The seed outage: a pool registered under an agent nothing dispatches to.
            replace(HEALTHY, pools=[pool("eu-central-a"), pool("us-east-a", agent="avatar-agent")]),
            ["pool us-east-a is targeted by a rule"],
            "never get a room",
        ),
        (
            replace(HEALTHY, otlp=OtlpProbe("http://127.0.0.1:4318", "cannot connect to 127.0.0.1:4318")),
            ["OTLP endpoint"],
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (replace(HEALTHY, now=1100.0), [RESYNC], "orchestrator replica"),
        (replace(HEALTHY, resync={**HEALTHY.resync, "error": "ListRooms: 503"}), [RESYNC], "LiveKit"),  # type: ignore[dict-item]
        (
            # Rooms the resync had to find: webhooks are being lost, and doctor says where to look.
            replace(HEALTHY, resync={**HEALTHY.resync, "last_found_at": 990.0, "last_found": 2}),  # type: ignore[dict-item]
            [RESYNC],
            "webhook.urls",
        ),
        (
            replace(HEALTHY, config_error="switchboard.yaml: field 'rules.0.agent' is missing"),
            ["config"],
            "fix",
        ),
        (
            replace(
                HEALTHY,
                rules=[
                    Rule(name="all", match="*", agent=AGENT),
                    Rule(name="ornina", match="ornina-*", agent=AGENT),
                ],
            ),
            ["rule order"],
            "priority",
        ),
    ],
)
def test_each_misconfiguration_is_named_with_a_fix(facts: Facts, failed: list[str], words: str) -> None:
    results = run_checks(facts)
    assert failing(results) == failed
    assert exit_code(results) == 1
    text = " ".join(f"{r.detail} {r.fix}" for r in results if r.ok is False)
    assert words in text


REFUSED = replace(
    HEALTHY,
    nats_error="cannot connect to NATS at nats://x:1 after 1 attempts: authorization violation",
    nats_auth="user 'orchestrator' with NATS_PASSWORD",
    nats_auth_refused=refused_hint(NatsSettings(user="orchestrator", password="wrong-password")),
    streams={},
    consumers={},
    bucket=None,
    pools=None,
)


@pytest.mark.parametrize(
    ("facts", "failed", "words"),
    [
        # The servers answered, and refused: reachable, but the credentials are named, with the
        # servers' variable to compare against.
        (REFUSED, ["NATS credentials"], "SWITCHBOARD_NATS_ORCHESTRATOR_PASSWORD_HASH"),
        (
            replace(
                REFUSED,
                nats_auth="the nkey seed in NATS_NKEY_SEED_FILE (/run/secrets/worker.nk)",
                nats_auth_refused=refused_hint(NatsSettings(nkey_seed_file="/run/secrets/worker.nk")),
            ),
            ["NATS credentials"],
            "SWITCHBOARD_NATS_WORKER_<POOL>_NKEY",
        ),
        (
            replace(
                REFUSED,
                nats_auth="user 'orchestrater' with NATS_PASSWORD",
                nats_auth_refused=refused_hint(NatsSettings(user="orchestrater", password="wrong-password")),
            ),
            ["NATS credentials"],
            "orchestrator, ingest, operator",
        ),
        # Found without asking the servers (e.g. doctor run with the deployment's env file).
        (
            replace(
                HEALTHY,
                credential_problems=[
                    CredentialProblem(
                        "SWITCHBOARD_NATS_INGEST_PASSWORD_HASH",
                        "is a $2b$ bcrypt hash: nats-server reads only $2a$ hashes from its environment",
                        "write the same hash with $2a$",
                    )
                ],
            ),
            ["credential SWITCHBOARD_NATS_INGEST_PASSWORD_HASH"],
            "$2a$",
        ),
    ],
)
def test_credential_problems_name_the_variable(facts: Facts, failed: list[str], words: str) -> None:
    results = run_checks(facts)
    assert failing(results) == failed
    assert exit_code(results) == 1
    text = " ".join(f"{r.detail} {r.fix}" for r in results if r.ok is False)
    assert words in text
    assert "wrong-password" not in " ".join(f"{r.name} {r.detail} {r.fix}" for r in results)


def test_refused_credentials_mark_dependent_checks_as_not_run_for_that_reason() -> None:
    results = run_checks(REFUSED)
    reachable = next(r for r in results if r.name == "NATS reachable")
    assert reachable.ok is True and "refused" in reachable.detail
    skipped = [r for r in results if r.ok is None]
    assert skipped and all("refused the credentials" in r.detail for r in skipped)


def test_accepted_credentials_are_shown_without_a_secret() -> None:
    results = run_checks(replace(HEALTHY, nats_auth="user 'operator' with NATS_PASSWORD"))
    (row,) = [r for r in results if r.name == "NATS credentials"]
    assert row.ok is True and "operator" in row.detail and exit_code(results) == 0


def test_nats_down_marks_dependent_checks_as_not_run() -> None:
    results = run_checks(replace(HEALTHY, nats_error="down", pools=None))
    skipped = [r.name for r in results if r.ok is None]
    assert "JetStream enabled" in skipped and "pools heartbeating" in skipped
    assert failing(results) == ["NATS reachable"]


def test_replicas_are_counted_and_none_running_fails() -> None:
    [ok] = check_replicas(HEALTHY)
    assert (
        ok.ok
        and "2 live (host-1-a1, host-2-b2)" in ok.detail
        and "~16 of the rooms' 32 partitions" in ok.detail
    )
    [none] = check_replicas(replace(HEALTHY, replicas=[]))
    assert none.ok is False and "switchboard orchestrator" in none.fix
    [unknown] = check_replicas(replace(HEALTHY, replicas=None))
    assert unknown.ok is None
