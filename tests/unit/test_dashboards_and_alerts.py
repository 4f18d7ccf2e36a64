"""deploy/grafana and deploy/prometheus against the code and against promtool.

- The alert rules parse and pass their unit tests (``promtool check rules``, ``promtool test rules``)
  and the scrape config parses (``promtool check config``), with the promtool of
  ``scripts/install-promtool`` — the Prometheus release the compose file runs.
- Every metric and label named in the dashboard, the rules and the rule tests is one the code
  exports: the exposition is made here by the project's own instruments (orchestrator/metrics.py,
  agent_worker/worker_metrics.py) driven through the code that records them, read back from an
  in-memory Prometheus registry as ``/metrics`` serves it. Renaming a metric or an attribute fails.
- The dashboard is a valid Grafana dashboard with a data source and queries on every panel; the
  compose file mounts the dashboard, the provisioning and the rules, and Prometheus scrapes every
  orchestrator and worker service where it listens.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent_worker.worker_metrics import WorkerMetrics
from devstack.process import MissingBinaryError, cache_dir, find_binary
from orchestrator.index import RoomIndex
from orchestrator.ingest.app import webhook_counter
from orchestrator.livekit_gateway import LiveKitCallError, LiveRoom
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.records import RoomRecord, RoomState
from orchestrator.room.facts import DispatchFailed, DispatchLanded, Outcome
from orchestrator.room.observe import Observer
from orchestrator.scheduler import PoolView
from orchestrator.service import OrchestratorService
from orchestrator.store import Versioned
from shared.telemetry import LATENCY_BUCKETS
from tests.roomkit import run_dispatch

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
DASHBOARD = GRAFANA_DIR / "switchboard-dashboard.json"
INSTALL_SCRIPT = ROOT / "scripts" / "install-promtool"

# Series Prometheus makes itself, with the labels it gives them.
PROMETHEUS_SERIES = {"up": {"job", "instance"}, "ALERTS": {"alertname", "alertstate", "severity"}}
# Labels every scraped series gets: job, instance and those the scrape config's relabelling sets.
TARGET_LABELS = {"job", "instance"} | {
    relabel["target_label"]
    for job in yaml.safe_load((PROMETHEUS_DIR / "prometheus.yaml").read_text())["scrape_configs"]
    for relabel in job.get("relabel_configs", [])
}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules() -> list[dict[str, Any]]:
    return [r for g in _yaml(PROMETHEUS_DIR / "alerts.yaml")["groups"] for r in g["rules"]]


# -- promtool --------------------------------------------------------------------------------------


def promtool_version() -> str:
    """The version scripts/install-promtool builds (its default), so the two never disagree."""
    match = re.search(r'version="\$\{PROMTOOL_VERSION:-(v[0-9.]+)\}"', INSTALL_SCRIPT.read_text())
    assert match, f"no default version found in {INSTALL_SCRIPT}"
    return match.group(1)


def find_promtool() -> str:
    """The pinned build scripts/install-promtool leaves in the cache (as devstack finds jaeger): no
    promtool from PATH, whose PromQL may differ from the deployed Prometheus's."""
    version = promtool_version()
    hint = f"scripts/install-promtool   (needs Go; builds promtool {version} once; scripts/test runs it)"
    try:
        return find_binary("promtool", hint, cache_dir() / "bin" / f"promtool-{version}", search_path=False)
    except MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)


def promtool(*args: str) -> str:
    done = subprocess.run(
        [find_promtool(), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_alert_rules_are_valid_and_lint_clean() -> None:
    out = promtool("check", "rules", "--lint=all", "--lint-fatal", "alerts.yaml")
    assert "SUCCESS" in out, out


def test_alert_rules_pass_their_unit_tests() -> None:
    out = promtool("test", "rules", "alerts.test.yaml")
    assert "SUCCESS" in out, out


def test_scrape_config_is_valid() -> None:
    out = promtool("check", "config", "--lint=all", "--lint-fatal", "prometheus.yaml")
    assert "SUCCESS: 1 rule files found" in out, out


def test_every_alert_is_unit_tested_and_says_what_to_do() -> None:
    rules = _rules()
    alerts = {r["alert"] for r in rules}
    tests = _yaml(PROMETHEUS_DIR / "alerts.test.yaml")["tests"]
    fired = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    assert alerts - fired == set(), f"alerts without a firing test case: {sorted(alerts - fired)}"
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description"} <= set(annotations), rule["alert"]
        assert "switchboard " in annotations["description"] or "/healthz" in annotations["description"], (
            f"{rule['alert']}: the description should name the command or endpoint to look at"
        )


# -- what the code exports -------------------------------------------------------------------------


@dataclass
class Exposition:
    labels: dict[str, set[str]] = field(default_factory=dict)  # sample name -> label names

    def known(self, metric: str) -> bool:
        return metric in self.labels or metric in PROMETHEUS_SERIES

    def label_names(self, metric: str) -> set[str]:
        return self.labels.get(metric) or PROMETHEUS_SERIES.get(metric, set())


class _FlakyLiveKit:
    """CreateDispatch that fails once (LiveKit unreachable), then succeeds on the retry; or that
    LiveKit refuses for good (bad credentials)."""

    def __init__(self, permanent: bool) -> None:
        self.calls = 0
        self.permanent = permanent

    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        self.calls += 1
        if self.permanent:
            raise LiveKitCallError("unauthenticated", "refused", permanent=True)
        if self.calls == 1:
            raise LiveKitCallError("unreachable", "connection refused", permanent=False)
        return "AD_test"

    async def room_info(self, room: str) -> LiveRoom | None:
        return LiveRoom(room, None, None, "", 1)


async def _dispatch(metrics: OrchestratorMetrics, permanent: bool) -> Outcome:
    return await run_dispatch(_FlakyLiveKit(permanent), metrics)


@cache
def exported() -> Exposition:
    """The /metrics of an orchestrator and a worker after each instrument recorded what the code
    records: names, unit suffixes and labels exactly as Prometheus scrapes them."""
    registry = CollectorRegistry()
    provider = MeterProvider(
        resource=Resource.create({"service.name": "switchboard-test"}),
        metric_readers=[PrometheusMetricReader(registry=registry)],
        views=[
            View(instrument_type=Histogram, aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS))
        ],
    )
    metrics = OrchestratorMetrics(provider.get_meter("switchboard.orchestrator"))
    # Room transitions, through the reconciler's observer.
    observer = Observer(metrics)
    for state, reason in [
        (RoomState.DISPATCHED, None),
        (RoomState.JOINED, None),
        (RoomState.SPEAKING, None),
        (RoomState.REDISPATCHING, "join_timeout"),
        (RoomState.FAILED, "no_pool"),
    ]:
        observer.committed(
            RoomRecord(room="ornina-1", state=RoomState.RECEIVED),
            RoomRecord(room="ornina-1", state=state, reason=reason, pool="eu-central-a"),
            now=time.time(),
        )
    # CreateDispatch: a retried try, a success, a permanent refusal.
    assert isinstance(asyncio.run(_dispatch(metrics, permanent=False)), DispatchLanded)
    refused = asyncio.run(_dispatch(metrics, permanent=True))
    assert isinstance(refused, DispatchFailed) and refused.permanent
    # A dead-lettered message, as the orchestrator service counts it.
    OrchestratorService._count_rejected(
        cast(OrchestratorService, SimpleNamespace(metrics=metrics)), "switchboard.rooms.created", "malformed"
    )
    view = PoolView(
        pool="eu-central-a",
        agent="ornina-avatar-agent",
        region="eu-central",
        agent_name="ornina-avatar-agent.eu-central-a",
        workers=1,
        capacity=4,
        active=1,
        load=0.25,
        draining=False,
        liveness="alive",
        age_s=0.5,
    )
    metrics.observe_pools(lambda: [view], lambda views: {v.pool: 1 for v in views})
    index = RoomIndex()
    index.apply("ornina-2", Versioned(RoomRecord(room="ornina-2", state=RoomState.WAITING_FOR_POOL), 1))
    metrics.observe_rooms(index.by_state)
    # The ingest's webhooks, as its handler counts them.
    count = webhook_counter(provider.get_meter("switchboard.ingest"))
    count("published", "room_started")
    count("refused", "bad_signature")
    opts = SimpleNamespace(pool="eu-central-a", region="eu-central", worker_id="w-1")
    worker_state = SimpleNamespace(
        opts=opts,
        active_dispatches=lambda: ["AD_test"],
        load=lambda: 0.25,
        pending_reports=lambda: 0,
        draining=False,
    )
    WorkerMetrics(provider.get_meter("switchboard.agent_worker"), cast(Any, worker_state))

    exposition = Exposition()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            exposition.labels.setdefault(sample.name, set()).update(sample.labels)
    provider.shutdown()
    return exposition


def test_the_exposition_has_what_the_dashboard_is_built_on() -> None:
    """Guards the generator above: if it stopped recording, every name check would be vacuous."""
    got = exported().labels
    for name in (
        "switchboard_room_time_to_voice_seconds_bucket",
        "switchboard_dispatches_total",
        "switchboard_redispatches_total",
        "switchboard_messages_rejected_total",
        "switchboard_livekit_create_dispatch_duration_seconds_count",
        "switchboard_dispatch_retries_total",
        "switchboard_pool_liveness",
        "switchboard_worker_pending_reports",
    ):
        assert name in got, f"{name} not exported; exported: {sorted(got)}"
    assert {"outcome", "error_type"} <= got["switchboard_livekit_create_dispatch_duration_seconds_count"]


# -- PromQL: which metrics and labels an expression names -------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "start", "end", "atan2"}
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$")


@dataclass
class Names:
    metrics: set[str]
    labels: set[str]


def promql_names(expr: str) -> Names:
    """Metric names (selectors) and label names (matchers, grouping) an expression uses."""
    values = _LABEL_VALUES.match(expr)  # Grafana's label_values(selector, label)
    if values:
        inner = promql_names(values.group(1))
        return Names(inner.metrics, inner.labels | {values.group(2)})
    text = _STRING.sub('""', expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries ($__rate_interval, $__range)
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    labels: set[str] = set()
    for block in _MATCHERS.findall(text):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", block))
    text = _MATCHERS.sub(" ", text)
    for group in _GROUPING.findall(text):
        labels |= {name.strip() for name in group.split(",") if name.strip()}
    text = _GROUPING.sub(" ", text)
    metrics = {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}
    return Names(metrics, labels)


def test_the_promql_reader_finds_names_and_labels() -> None:
    names = promql_names(
        'sum by (cause) (increase(switchboard_redispatches_total{cause!="pool_dead"}[$__rate_interval]))'
        ' / on () group_left () clamp_min(sum(rate(switchboard_dispatches_total{outcome="ok"}[5m])), 1) > 0.2'
        " and absent(up offset 5m) or vector(0)"
    )
    assert names.metrics == {"switchboard_redispatches_total", "switchboard_dispatches_total", "up"}
    assert names.labels == {"cause", "outcome"}
    assert promql_names("label_values(switchboard_pool_liveness, switchboard_region)") == Names(
        {"switchboard_pool_liveness"}, {"switchboard_region"}
    )


def unknown_names(expr: str, exposition: Exposition, extra_labels: Iterable[str] = ()) -> list[str]:
    """What ``expr`` names that the code does not export (empty: all good); ``extra_labels``: labels
    used around the expression (alert templates, legends), which its result must carry."""
    names = promql_names(expr)
    problems = [f"metric {m}" for m in sorted(names.metrics) if not exposition.known(m)]
    available = set().union(*(exposition.label_names(m) for m in names.metrics)) | TARGET_LABELS
    problems += [f"label {label}" for label in sorted((names.labels | set(extra_labels)) - available)]
    return problems


def test_a_misnamed_metric_or_label_is_caught() -> None:
    good = 'sum by (switchboard_pool) (switchboard_pool_liveness{switchboard_region="eu"})'
    assert unknown_names(good, exported()) == []
    assert "metric switchboard_pool_alive" in unknown_names(good.replace("liveness", "alive"), exported())
    assert unknown_names(good.replace("by (switchboard_pool)", "by (pool)"), exported()) == ["label pool"]
    # Unit suffixes are part of the name the exporter makes.
    assert unknown_names("switchboard_room_time_to_voice_bucket", exported()) == [
        "metric switchboard_room_time_to_voice_bucket"
    ]


# -- the rules and their tests ---------------------------------------------------------------------


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_alert_names_only_exported_metrics(rule: dict[str, Any]) -> None:
    names = promql_names(rule["expr"])
    assert names.metrics, f"no metric found in {rule['expr']}"
    templated = set(re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])))
    assert unknown_names(rule["expr"], exported(), templated) == []


def test_rule_test_series_are_exported_metrics() -> None:
    problems = []
    for test in _yaml(PROMETHEUS_DIR / "alerts.test.yaml")["tests"]:
        for series in test["input_series"]:
            for problem in unknown_names(series["series"], exported()):
                problems.append(f"{test['name']}: {series['series']}: {problem}")
    assert problems == []


# -- the dashboard ---------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # inside collapsed rows


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every query: panels, template variables, annotations."""
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            yield f"variable {var['name']}", query
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']}", annotation["expr"]


def test_dashboard_is_a_grafana_dashboard_with_queries_on_every_panel() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    provisioned = _yaml(GRAFANA_DIR / "provisioning" / "datasources.yaml")["datasources"]
    assert datasource["current"]["value"] in {d["uid"] for d in provisioned}, (
        "default data source not provisioned"
    )
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in _panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, f"{panel['title']} is wider than the grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("targets"), f"{panel['title']} has no queries"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{panel['title']} {target.get('refId')}: empty query"
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: duplicate refId"
    for name in ("region", "pool"):
        assert any(f"${name}" in expr for _, expr in _queries(dashboard)), f"${name} is not used"


def test_dashboard_names_only_exported_metrics() -> None:
    dashboard = _dashboard()
    problems = [
        f"{where}: {p} in {expr}"
        for where, expr in _queries(dashboard)
        for p in unknown_names(expr, exported())
    ]
    nameless = [where for where, expr in _queries(dashboard) if not promql_names(expr).metrics]
    assert nameless == [], "queries in which no metric was found (the reader would check nothing)"
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            problems += [
                f"panel {panel['title']!r} legend: {p}"
                for p in unknown_names(target["expr"], exported(), legend)
                if p.startswith("label")
            ]
    assert problems == []


def test_dashboard_covers_every_exported_switchboard_metric() -> None:
    used = set().union(*(promql_names(expr).metrics for _, expr in _queries(_dashboard())))
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in exported().labels}
    missing = {
        family
        for family in families
        if family.startswith("switchboard_") and not any(u.startswith(family) for u in used)
    }
    assert missing == set(), f"exported but on no dashboard panel: {sorted(missing)}"


# -- compose wiring --------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(COMPOSE)  # PyYAML resolves the << merges
    return data


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> file under deploy/ for the service's bind mounts of repository files."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            path = (COMPOSE.parent / source).resolve()
            assert path.exists(), f"{source} does not exist"
            mounts[target] = str(path.relative_to(DEPLOY))
    return mounts


def test_compose_runs_prometheus_with_the_scrape_config_and_rules() -> None:
    prometheus = _compose()["services"]["prometheus"]
    assert prometheus["image"] == f"prom/prometheus:{promtool_version()}", (
        "the prometheus image and scripts/install-promtool must be the same release"
    )
    mounts = _mounts(prometheus)
    config = next(arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file="))
    assert mounts.get(config) == "prometheus/prometheus.yaml"
    config_dir = config.rsplit("/", 1)[0]
    for rule_file in _yaml(PROMETHEUS_DIR / "prometheus.yaml")["rule_files"]:
        assert mounts.get(f"{config_dir}/{rule_file}") == f"prometheus/{rule_file}", (
            f"{rule_file} not mounted"
        )


def test_compose_runs_grafana_with_the_provisioning_and_dashboard() -> None:
    services = _compose()["services"]
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    by_file = {source: target for target, source in mounts.items()}
    assert by_file["grafana/provisioning/datasources.yaml"].startswith(
        "/etc/grafana/provisioning/datasources/"
    )
    assert by_file["grafana/provisioning/dashboards.yaml"].startswith("/etc/grafana/provisioning/dashboards/")
    (provider,) = _yaml(GRAFANA_DIR / "provisioning" / "dashboards.yaml")["providers"]
    dashboard_path = by_file["grafana/switchboard-dashboard.json"]
    assert dashboard_path.startswith(provider["options"]["path"].rstrip("/") + "/")
    (datasource,) = _yaml(GRAFANA_DIR / "provisioning" / "datasources.yaml")["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services
    assert "prometheus" in grafana.get("depends_on", {})


def _listen_address(service: dict[str, Any]) -> tuple[str, int] | None:
    """(host, port) of a Switchboard process's /metrics, from its command or environment."""
    command = service.get("command") or []
    env = {k: str(v) for k, v in (service.get("environment") or {}).items()}

    def option(flag: str, variable: str, default: str) -> str:
        return command[command.index(flag) + 1] if flag in command else env.get(variable, default)

    if command[:2] == ["switchboard", "worker"]:
        host = option("--health-host", "SWITCHBOARD_WORKER_HEALTH_HOST", "127.0.0.1")
        return host, int(option("--health-port", "SWITCHBOARD_WORKER_HEALTH_PORT", "0"))
    if command[:2] in (["switchboard", "orchestrator"], ["switchboard", "ingest"]):
        return env.get("SWITCHBOARD_HTTP_HOST", "127.0.0.1"), int(env.get("SWITCHBOARD_HTTP_PORT", "0"))
    return None


def test_prometheus_scrapes_every_orchestrator_and_worker_where_it_listens() -> None:
    services = _compose()["services"]
    scraped: dict[str, int] = {}
    for job in _yaml(PROMETHEUS_DIR / "prometheus.yaml")["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                scraped[host] = int(port)
        for dns in job.get("dns_sd_configs", []):
            for name in dns["names"]:
                scraped[name] = int(dns["port"])
    expected = {}
    for name, service in services.items():
        address = _listen_address(service)
        if address is None:
            continue
        host, port = address
        assert host == "0.0.0.0" and port > 0, (
            f"{name}: /metrics on {host}:{port} is not reachable by Prometheus"
        )
        expected[name] = port
    assert {"orchestrator-1", "orchestrator-2", "ingest", "worker-eu-central-a", "worker-us-east-a"} <= set(
        expected
    )
    assert {k: v for k, v in scraped.items() if k in services} == expected
