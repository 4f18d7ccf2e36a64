"""`switchboard doctor`'s checks: small pure functions from gathered :class:`Facts` to results.

Gathering (I/O) is in :mod:`orchestrator.ops.doctor_facts`; here nothing touches the network, so
each misconfiguration is a row in a unit-test table. ``ok`` is None for a check that could not run
because an earlier one failed (it is shown, but only the earlier failure counts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.partitions import PARTITIONS
from orchestrator.rules import validate_rules
from orchestrator.scheduler import PoolView
from shared import subjects
from shared.config import Rule
from shared.nats_credentials import CredentialProblem


def streams_of(cell: subjects.Cell) -> tuple[str, str, str]:
    return (cell.rooms_stream, cell.status_stream, cell.dead_letter_stream)


def consumer_streams_of(cell: subjects.Cell) -> tuple[str, str]:
    return (cell.rooms_stream, cell.status_stream)


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool | None
    detail: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class LiveKitProbe:
    url: str
    # None: the authenticated call succeeded. Else LiveKitCallError.reason and its message.
    reason: str | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class OtlpProbe:
    endpoint: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    nats_url: str
    nats_error: str | None = None
    config_path: str = "switchboard.yaml"
    config_error: str | None = None
    jetstream_error: str | None = None
    streams: dict[str, bool] = field(default_factory=dict)
    # "<stream>/<durable>" -> present
    consumers: dict[str, bool] = field(default_factory=dict)
    # Whose streams and buckets these are (the region's, with per-region state).
    cell: subjects.Cell = subjects.SHARED
    bucket: bool | None = None
    livekit: LiveKitProbe | None = None
    # Pools heard from (and pinned ones): None when NATS could not be asked.
    pools: Sequence[PoolView] | None = None
    rules: Sequence[Rule] = ()
    otlp: OtlpProbe | None = None  # None: no OTLP endpoint configured
    # How this client authenticates, in words (never a secret); None: no credentials set.
    nats_auth: str | None = None
    # The servers answered "authorization violation": what to check (variables, never values).
    nats_auth_refused: str | None = None
    # Credentials found unusable without asking the servers (shared.nats_credentials).
    credential_problems: Sequence[CredentialProblem] = ()
    # The last resync pass of any replica, None: never ran; and what it is set to.
    resync: Mapping[str, Any] | None = None
    # The live orchestrator replicas (their membership keys); None: not readable.
    replicas: Sequence[str] | None = None
    resync_interval_s: float = 0.0
    now: float = 0.0


def _needs_nats(name: str, f: Facts | None = None) -> CheckResult:
    why = "NATS refused the credentials" if f is not None and f.nats_auth_refused else "NATS is unreachable"
    return CheckResult(name, None, f"not checked: {why}")


def check_config(f: Facts) -> list[CheckResult]:
    if f.config_error:
        return [
            CheckResult(
                "config",
                False,
                f.config_error,
                "fix the file, or point SWITCHBOARD_CONFIG at the right one",
            )
        ]
    results = [CheckResult("config", True, f"{f.config_path}: {len(f.rules)} rules")]
    for warning in validate_rules(f.rules):
        results.append(
            CheckResult("rule order", False, warning, "raise its priority or narrow the broader glob")
        )
    return results


def check_nats(f: Facts) -> list[CheckResult]:
    if f.nats_auth_refused:
        return [CheckResult("NATS reachable", True, f"{f.nats_url} answered (and refused the credentials)")]
    if f.nats_error:
        return [
            CheckResult(
                "NATS reachable",
                False,
                f.nats_error,
                "start nats-server (with -js) or set NATS_URL "
                "(and NATS_USER/NATS_PASSWORD or NATS_NKEY_SEED_FILE)",
            )
        ]
    return [CheckResult("NATS reachable", True, f.nats_url)]


def check_nats_credentials(f: Facts) -> list[CheckResult]:
    """The servers' verdict on this client's credentials, then every credential found unusable here."""
    results = []
    if f.nats_auth_refused:
        who = f.nats_auth or "a client without credentials"
        results.append(
            CheckResult(
                "NATS credentials",
                False,
                f"authorization violation: the servers refused {who}",
                f.nats_auth_refused,
            )
        )
    elif f.nats_auth and not f.nats_error:
        results.append(CheckResult("NATS credentials", True, f"accepted: {f.nats_auth}"))
    results += [
        CheckResult(f"credential {p.variable}", False, p.problem, p.fix) for p in f.credential_problems
    ]
    return results


def check_jetstream(f: Facts) -> list[CheckResult]:
    if f.nats_error:
        return [_needs_nats("JetStream enabled", f)]
    if f.jetstream_error:
        return [
            CheckResult(
                "JetStream enabled",
                False,
                f.jetstream_error,
                "enable JetStream on the server (nats-server -js, or 'jetstream {}' in its config)",
            )
        ]
    return [CheckResult("JetStream enabled", True, "account info ok")]


def check_streams(f: Facts) -> list[CheckResult]:
    if f.nats_error or f.jetstream_error:
        return [_needs_nats(f"stream {s}", f) for s in streams_of(f.cell)]
    fix = "start an orchestrator once (it creates streams, consumer and bucket), or create them as in docs"
    return [
        CheckResult(f"stream {s}", True, "present")
        if f.streams.get(s)
        else CheckResult(f"stream {s}", False, "missing", fix)
        for s in streams_of(f.cell)
    ]


def check_consumers(f: Facts) -> list[CheckResult]:
    names = [f"{s}/{subjects.ORCHESTRATOR_CONSUMER}" for s in consumer_streams_of(f.cell)]
    if f.nats_error or f.jetstream_error:
        return [_needs_nats(f"consumer {n}", f) for n in names]
    return [
        CheckResult(f"consumer {n}", True, "present")
        if f.consumers.get(n)
        else CheckResult(
            f"consumer {n}",
            False,
            "missing: no orchestrator has bound to this stream",
            "start the orchestrator: switchboard orchestrator",
        )
        for n in names
    ]


def check_bucket(f: Facts) -> list[CheckResult]:
    name = f"KV bucket {f.cell.rooms_bucket}"
    if f.nats_error or f.jetstream_error:
        return [_needs_nats(name, f)]
    if f.bucket:
        return [CheckResult(name, True, "present")]
    return [CheckResult(name, False, "missing", "start the orchestrator: switchboard orchestrator")]


def check_replicas(f: Facts) -> list[CheckResult]:
    """Orchestrator replicas alive now: they divide the rooms' partitions among themselves."""
    name = "orchestrator replicas"
    if f.nats_error or f.jetstream_error:
        return [_needs_nats(name, f)]
    if f.replicas is None:
        return [CheckResult(name, None, f"not checked: KV bucket {f.cell.members_bucket} not readable")]
    if not f.replicas:
        return [
            CheckResult(
                name,
                False,
                "none running: no room is tracked (timers, failover, resync) and no event is taken",
                "start one: switchboard orchestrator",
            )
        ]
    share = PARTITIONS / len(f.replicas)
    listed = ", ".join(sorted(f.replicas)[:8]) + (", ..." if len(f.replicas) > 8 else "")
    return [
        CheckResult(
            name,
            True,
            f"{len(f.replicas)} live ({listed}); "
            f"each tracks ~{share:.3g} of the rooms' {PARTITIONS} partitions",
        )
    ]


# A room the resync had to find this recently says webhooks are being lost now.
RECENTLY_FOUND_S = 600.0


def check_resync(f: Facts) -> list[CheckResult]:
    """The anti-entropy pass: running, succeeding, and finding no room that webhooks missed."""
    name = "resync (LiveKit's rooms against the records)"
    if f.resync_interval_s <= 0:
        return [CheckResult(name, None, "off (orchestrator.resync_interval_s: 0)")]
    if f.nats_error or f.jetstream_error:
        return [_needs_nats(name, f)]
    r = f.resync
    if r is None or r.get("at") is None:
        return [CheckResult(name, None, "no pass recorded yet (no orchestrator replica has run one)")]
    age = f.now - float(r["at"])
    by = r.get("owner") or "?"
    total = int(r.get("found_total") or 0)
    seen = f"last pass {age:.0f}s ago by {by}: {r.get('rooms', 0)} rooms listed"
    if age > 3 * f.resync_interval_s + 10:
        return [
            CheckResult(
                name,
                False,
                f"no pass for {age:.0f}s (every {f.resync_interval_s:g}s expected; {seen})",
                "check that an orchestrator replica runs and can reach LiveKit (its log says "
                "'resync pass failed' or 'ListRooms failed')",
            )
        ]
    if r.get("error"):
        return [
            CheckResult(
                name,
                False,
                f"{seen}; it failed: {r['error']}",
                "LiveKit's API must answer the orchestrators: see the LiveKit check",
            )
        ]
    last_found_at = r.get("last_found_at")
    if last_found_at is not None and f.now - float(last_found_at) < RECENTLY_FOUND_S:
        return [
            CheckResult(
                name,
                False,
                f"{seen}; {r.get('last_found', 0)} room(s) found {f.now - float(last_found_at):.0f}s ago "
                f"that no room event had announced ({total} since the start): "
                "their room_started webhooks were lost",
                "check LiveKit's webhook config (webhook.urls must reach `switchboard ingest`, "
                "webhook.api_key one of its keys) and the ingest's switchboard_webhooks_total by outcome",
            )
        ]
    detail = f"{seen}; {r.get('ended', 0)} ended, {r.get('agent_lost', 0)} agents gone in that pass"
    if total:
        detail += f"; {total} room(s) found without an event since the start, none lately"
    return [CheckResult(name, True, detail)]


def check_livekit(f: Facts) -> list[CheckResult]:
    p = f.livekit
    if p is None:
        return []
    if p.reason is None:
        return [
            CheckResult("LiveKit reachable", True, p.url),
            CheckResult("LiveKit credentials", True, "an authenticated ListRooms succeeded"),
        ]
    if p.reason == "unauthenticated":
        return [
            CheckResult("LiveKit reachable", True, p.url),
            CheckResult(
                "LiveKit credentials",
                False,
                p.message,
                "set LIVEKIT_API_KEY / LIVEKIT_API_SECRET to a key pair from the server's 'keys:'",
            ),
        ]
    return [
        CheckResult(
            "LiveKit reachable",
            False,
            p.message,
            "start livekit-server, or set LIVEKIT_URL (http(s):// or ws(s):// of the server)",
        ),
        CheckResult("LiveKit credentials", None, "not checked: LiveKit is unreachable"),
    ]


def _live(pools: Sequence[PoolView]) -> list[PoolView]:
    return [p for p in pools if p.liveness != "dead"]


def check_pools(f: Facts) -> list[CheckResult]:
    if f.pools is None:
        return [_needs_nats("pools heartbeating", f)]
    live = _live(f.pools)
    if not live:
        dead = ", ".join(p.pool for p in f.pools)
        return [
            CheckResult(
                "pools heartbeating",
                False,
                "no pool heartbeat heard" + (f" (pinned/known but silent: {dead})" if dead else ""),
                "start a pool: switchboard worker --agent AGENT --region REGION --pool POOL "
                "(same NATS_URL and LiveKit as here)",
            )
        ]
    listing = ", ".join(
        f"{p.pool} → {p.agent_name} ({p.workers} workers{', draining' if p.draining else ''})" for p in live
    )
    results = [CheckResult("pools heartbeating", True, listing)]
    for p in f.pools:
        if p.liveness == "dead":
            results.append(
                CheckResult(
                    f"pool {p.pool}",
                    False,
                    f"pinned in the config but silent ({p.agent_name})",
                    f"start its workers, or remove pool {p.pool} from 'pools:' in the config",
                )
            )
    return results


def check_rules_have_pools(f: Facts) -> list[CheckResult]:
    if f.pools is None:
        return [_needs_nats(f"rule {r.name} has a live pool", f) for r in f.rules]
    results = []
    for rule in f.rules:
        name = f"rule {rule.name} has a live pool"
        serving = [p for p in _live(f.pools) if p.agent == rule.agent]
        accepting = [p for p in serving if not p.draining]
        if accepting:
            results.append(
                CheckResult(name, True, f"agent {rule.agent}: {', '.join(p.pool for p in accepting)}")
            )
        elif serving:
            results.append(
                CheckResult(
                    name,
                    False,
                    f"agent {rule.agent}: every pool is draining ({', '.join(p.pool for p in serving)})",
                    f"start a fresh pool for agent {rule.agent}",
                )
            )
        else:
            results.append(
                CheckResult(
                    name,
                    False,
                    f"no live pool serves agent {rule.agent!r}: "
                    f"rooms matching {rule.match!r} will wait, then fail",
                    f"start a pool: switchboard worker --agent {rule.agent} --region REGION --pool POOL",
                )
            )
    return results


def check_pools_have_rules(f: Facts) -> list[CheckResult]:
    if f.pools is None:
        return []
    targeted = {r.agent for r in f.rules}
    results = []
    for p in _live(f.pools):
        name = f"pool {p.pool} is targeted by a rule"
        if p.agent in targeted:
            rules = ", ".join(r.name for r in f.rules if r.agent == p.agent)
            results.append(CheckResult(name, True, f"agent {p.agent} ← {rules}"))
        else:
            results.append(
                CheckResult(
                    name,
                    False,
                    f"registered as {p.agent_name} (agent {p.agent!r}) but no rule dispatches to agent "
                    f"{p.agent!r}: it will never get a room (LiveKit sends named workers explicit "
                    "dispatches only)",
                    f"add a rule with agent: {p.agent}, or restart the pool with --agent set to a "
                    f"rule's agent ({', '.join(sorted(targeted)) or 'no rules configured'})",
                )
            )
    return results


def check_otlp(f: Facts) -> list[CheckResult]:
    if f.otlp is None:
        return [
            CheckResult(
                "OTLP endpoint",
                True,
                "not configured: traces are not exported (set OTEL_EXPORTER_OTLP_ENDPOINT)",
            )
        ]
    if f.otlp.error:
        return [
            CheckResult(
                "OTLP endpoint",
                False,
                f"{f.otlp.endpoint}: {f.otlp.error}",
                "start the collector (or Jaeger) there, or fix OTEL_EXPORTER_OTLP_ENDPOINT",
            )
        ]
    return [CheckResult("OTLP endpoint", True, f"{f.otlp.endpoint} accepts connections")]


CHECKS: tuple[Callable[[Facts], list[CheckResult]], ...] = (
    check_config,
    check_nats,
    check_nats_credentials,
    check_jetstream,
    check_streams,
    check_consumers,
    check_bucket,
    check_replicas,
    check_livekit,
    check_resync,
    check_pools,
    check_rules_have_pools,
    check_pools_have_rules,
    check_otlp,
)


def run_checks(facts: Facts) -> list[CheckResult]:
    return [result for check in CHECKS for result in check(facts)]


def exit_code(results: Sequence[CheckResult]) -> int:
    return 1 if any(r.ok is False for r in results) else 0
