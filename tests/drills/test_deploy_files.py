"""deploy/ is validated offline, in every test run:

- compose: interpolated with deploy/compose/example.env (every ``${VAR}`` must be there or have a
  default), then parsed and validated by ``compose-spec`` (the Rust compose_spec parser: unknown
  keys, ports, secrets, networks); cross-references checked here (depends_on, mounted files);
- Kubernetes: every manifest against the Kubernetes 1.37 OpenAPI schemas shipped in
  ``kubernetes-validate`` (strict: unknown fields are errors), plus what production needs
  (replicas, probes, preStop drain, grace period, disruption budgets, secrets by reference);
- NATS: ``nats-server -t`` on each server config with the shared accounts file.
(``docker compose config`` is not available here: the docker CLI has no compose plugin, and
kubeconform would need schemas from the network.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import nkeys  # type: ignore[import-untyped]
import pytest
import yaml
from compose_spec import PyCompose  # type: ignore[import-untyped]

from devstack.nats_server import find_nats_server
from shared import probes
from shared.nats_credentials import PASSWORD_USERS, hash_password, hash_variable, worker_nkey_variable

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.37.0"
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|NKEY|SEED", re.I)


def _example_env() -> dict[str, str]:
    lines = (DEPLOY / "compose" / "example.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def _interpolate(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name, op, default = m.group(1), m.group(2), m.group(3)
        if name in env:
            return env[name]
        assert op == ":-", f"${{{name}}} is neither in example.env nor has a default"
        return default

    return _VAR.sub(sub, text)


def _compose() -> dict[str, Any]:
    text = (DEPLOY / "compose" / "docker-compose.yml").read_text()
    data: dict[str, Any] = yaml.safe_load(_interpolate(text, _example_env()))  # resolves << merges
    return data


def test_compose_file_is_valid_and_consistent() -> None:
    data = _compose()
    PyCompose.from_json(json.dumps(data)).validate()
    services: dict[str, Any] = data["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}) or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / "compose" / source).exists(), f"{name} mounts missing {source}"
    # The example's shape: NATS per region joined by gateways, 2 orchestrators, pools in 2 regions.
    assert {f"nats-{r}-{i}" for r in ("eu", "us") for i in (1, 2, 3)} <= set(services)
    assert {"livekit", "otel-collector", "jaeger", "orchestrator-1", "orchestrator-2", "ingest"} <= set(
        services
    )
    assert {"worker-eu-central-a", "worker-us-east-a"} <= set(services)
    # Two regions for real, as the region drills run them: per-region state, a LiveKit node, replicas
    # and an ingest in each region, each on its own region's NATS (and its own region's node).
    config = yaml.safe_load((DEPLOY / "compose" / "switchboard.yaml").read_text())
    assert config["state"] == "per_region"
    assert {"redis", "livekit-us", "orchestrator-us-1", "orchestrator-us-2", "ingest-us"} <= set(services)
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if name.startswith(("orchestrator", "ingest")):
            region = env["SWITCHBOARD_REGION"]
            assert f"nats-{region[:2]}-" in env["NATS_URL"], (name, region, env["NATS_URL"])
    for node, region, ingest in (
        ("livekit.yaml", "eu-central", "ingest"),
        ("livekit-us.yaml", "us-east", "ingest-us"),
    ):
        lk = yaml.safe_load((DEPLOY / "compose" / node).read_text())
        assert lk["region"] == region and lk["redis"]["address"] == "redis:6379"
        assert lk["webhook"]["urls"] == [f"http://{ingest}:8090/webhook"]
    assert services["worker-us-east-a"]["environment"]["LIVEKIT_URL"] == "ws://livekit-us:7880"
    # Secrets only by reference: no literal value under a secret-looking name.
    raw = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    for name, svc in raw["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if _SECRET_NAME.search(key) and key != "NATS_NKEY_SEED_FILE":
                assert str(value).startswith("${"), f"{name}: {key} must come from the environment"


def _manifests() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


@pytest.mark.parametrize("path_doc", _manifests(), ids=lambda pd: f"{pd[0].name}:{pd[1]['kind']}")
def test_kubernetes_manifest_matches_the_api_schema(path_doc: tuple[Path, dict[str, Any]]) -> None:
    _, doc = path_doc
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_manifests_are_production_shaped() -> None:
    docs = [doc for _, doc in _manifests()]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    orch = deployments["orchestrator"]["spec"]
    assert orch["replicas"] >= 2
    (container,) = orch["template"]["spec"]["containers"]
    assert {"livenessProbe", "readinessProbe"} <= set(container)
    workers = [d for n, d in deployments.items() if n.startswith("worker-")]
    assert {w["spec"]["template"]["metadata"]["labels"]["region"] for w in workers} == {
        "eu-central",
        "us-east",
    }
    for w in workers:
        pod = w["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        grace = next(float(e["value"]) for e in c["env"] if e["name"] == "SWITCHBOARD_WORKER_DRAIN_GRACE_S")
        assert pod["terminationGracePeriodSeconds"] > grace, "the pod must outlive the drain"
        assert "kill -TERM 1" in " ".join(c["lifecycle"]["preStop"]["exec"]["command"])
        assert {"readinessProbe", "livenessProbe"} <= set(c)
    pdb_selectors = [p["spec"]["selector"]["matchLabels"] for p in by_kind["PodDisruptionBudget"]]
    for name, d in deployments.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert any(sel.items() <= labels.items() for sel in pdb_selectors), (
            f"{name} has no PodDisruptionBudget"
        )
    secrets = {s["metadata"]["name"]: set(s["stringData"]) for s in by_kind["Secret"]}
    for doc in docs:
        for ref in re.findall(r"'secretKeyRef': \{'name': '([^']+)', 'key': '([^']+)'\}", str(doc)):
            assert ref[1] in secrets.get(ref[0], set()), f"secret {ref} is not defined"
        for container in _containers(doc):
            for env in container.get("env", []):
                if _SECRET_NAME.search(env["name"]) and env["name"] != "NATS_NKEY_SEED_FILE":
                    assert "valueFrom" in env, f"{env['name']} must come from a Secret"


def test_kubernetes_runs_both_regions_as_the_region_drills_do() -> None:
    """Per-region state: a NATS cluster, orchestrator replicas and an ingest in each region, each
    process on its own region's NATS (and LiveKit node), started with its region."""
    docs = [doc for _, doc in _manifests()]
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "switchboard-config"
    )
    assert yaml.safe_load(config["data"]["switchboard.yaml"])["state"] == "per_region"
    nats = {d["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet"}
    assert {"nats-eu", "nats-us"} <= nats
    for doc in docs:
        if doc["kind"] == "StatefulSet" and doc["metadata"]["name"].startswith("nats-"):
            short = doc["metadata"]["name"][5:]  # eu, us
            assert f"'name': 'nats-server-{short}', 'items': [{{'key': 'server-{short}.conf'" in str(doc)
    seen = set()
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        (c,) = _containers(doc)
        env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
        region = doc["spec"]["template"]["metadata"]["labels"]["region"]
        assert f"nats-{region[:2]}-0" in env["NATS_URL"], (doc["metadata"]["name"], env["NATS_URL"])
        if c["args"][1] in ("orchestrator", "ingest"):
            assert env["SWITCHBOARD_REGION"] == region, doc["metadata"]["name"]
            seen.add((c["args"][1], region))
        if "LIVEKIT_URL" in env:
            assert ("livekit-us:" in env["LIVEKIT_URL"]) == (region == "us-east"), doc["metadata"]["name"]
    assert seen == {(p, r) for p in ("orchestrator", "ingest") for r in ("eu-central", "us-east")}


def test_kubernetes_probes_ask_what_the_processes_serve() -> None:
    """A probe on a path nobody serves never gets ready (the workers once probed /health)."""
    probed = []
    for _, doc in _manifests():
        for container in _containers(doc):
            if not container.get("image", "").startswith("switchboard"):
                continue
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                if kind in container:
                    probed.append((doc["metadata"]["name"], kind, container[kind]["httpGet"]["path"]))
    assert probed
    wrong = [p for p in probed if p[2] not in probes.PATHS]
    assert not wrong, f"probes on paths no process serves ({probes.PATHS}): {wrong}"
    for _, doc in _manifests():
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        if any(c.get("image", "").startswith("switchboard") for c in pod.get("containers", [])):
            # The image runs as uid 10001 (Dockerfile); the pod must agree, and let it read secrets.
            assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
            assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 10001


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", []))


@pytest.mark.parametrize("region", ["eu", "us"])
def test_nats_server_configs_are_valid(region: str, tmp_path: Path) -> None:
    for name in (f"server-{region}.conf", "accounts.conf"):
        shutil.copy(DEPLOY / "nats" / name, tmp_path / name)
    # nats-server -t loads the certificates: a CA and a server certificate of our own, where the
    # deployed file expects /etc/nats/tls.
    tls = tmp_path / "tls"
    _certificates(tls, [f"nats-{region}", "localhost"])
    conf = tmp_path / f"server-{region}.conf"
    conf.write_text(conf.read_text().replace("/etc/nats/tls/", f"{tls}/"))
    env = {
        "NATS_SERVER_NAME": f"nats-{region}-1",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # What the servers get: bcrypt hashes of the passwords (deploy/nats/accounts.conf).
        **{hash_variable(user): hash_password(f"-{user}-0", cost=4) for user in PASSWORD_USERS},
        # One public nkey per pool the file names.
        **{
            worker_nkey_variable(pool): nkeys.from_seed(
                nkeys.encode_seed(bytes([i]) * 32, nkeys.PREFIX_BYTE_USER)
            ).public_key.decode()
            for i, pool in enumerate(DEPLOYED_POOLS)
        },
    }
    # As deployed: check-credentials.sh first, which then runs nats-server.
    check = DEPLOY / "nats" / "check-credentials.sh"
    done = subprocess.run(
        ["sh", str(check), find_nats_server(), "-c", str(tmp_path / f"server-{region}.conf"), "-t"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and "is valid" in done.stdout + done.stderr, done.stdout + done.stderr


def _certificates(into: Path, names: list[str]) -> None:
    """ca.crt, and tls.crt / tls.key for ``names`` signed by it (what the NATS servers mount)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    into.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "switchboard test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (into / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (into / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (into / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def test_nats_is_tls_everywhere_and_servers_join_only_by_certificate() -> None:
    """Issue 17: clients, routes and gateways over TLS; routes and gateways verify the peer's
    certificate; every deployed client speaks tls:// with the CA to check the servers by."""
    for region in ("eu", "us"):
        conf = (DEPLOY / "nats" / f"server-{region}.conf").read_text()
        blocks = re.findall(r"^\s*tls \{(.*?)\}", conf, flags=re.S | re.M)
        assert len(blocks) == 3, region  # cluster, gateway, clients
        assert sum("verify: true" in b for b in blocks) == 2, region  # routes and gateways
    clients = _nats_clients()
    assert clients
    for where, env in clients:
        urls = env["NATS_URL"].split(",")
        assert all(u.startswith("tls://") for u in urls), (where, urls)
        assert env.get("NATS_TLS_CA_FILE"), where


# The worker pools the compose and Kubernetes examples deploy, each a NATS user in accounts.conf.
DEPLOYED_POOLS = ("eu-central-a", "us-east-a")


def _token(pool: str) -> str:
    return pool.upper().replace("-", "_")


def test_each_deployed_pool_speaks_only_for_itself() -> None:
    """accounts.conf: a user per deployed pool, whose publish rights name that pool's subjects only;
    each pool's workers (compose, Kubernetes) read that pool's seed and no other."""
    accounts = (DEPLOY / "nats" / "accounts.conf").read_text()
    for pool in DEPLOYED_POOLS:
        name = f"SWITCHBOARD_WORKER_{_token(pool)}"
        users = re.findall(rf"\{{nkey: \$(\w+), permissions: \${name}\}}", accounts)
        assert users == [worker_nkey_variable(pool)], pool
        block = re.search(rf"{name} = \{{\s*publish: \{{(.*?)\}}", accounts, re.S)
        assert block is not None
        publish = re.findall(r'"([^"]+)"', block.group(1))
        assert [s for s in publish if s.startswith("switchboard.")] == [
            f"switchboard.pools.{pool}.heartbeat",
            f"switchboard.rooms.status.{pool}",
            f"switchboard.region.*.rooms.status.{pool}",  # per-region state: any room's region
        ]
    assert "SWITCHBOARD_NATS_WORKER_NKEY" not in accounts  # no key shared by every pool
    compose = _compose()["services"]
    for pool in DEPLOYED_POOLS:
        seed = compose[f"worker-{pool}"]["environment"]["NATS_NKEY_SEED_FILE"]
        assert _token(pool).lower() in seed, (pool, seed)


def _nats_clients() -> list[tuple[str, dict[str, str]]]:
    """(where, environment) of every deployed process that talks to NATS with credentials."""
    found = [
        (f"compose {name}", {k: str(v) for k, v in (svc.get("environment") or {}).items()})
        for name, svc in _compose()["services"].items()
    ]
    for path, doc in _manifests():
        for c in _containers(doc):
            found.append(
                (f"{path.name} {c['name']}", {e["name"]: str(e.get("value", "")) for e in c.get("env", [])})
            )
    return [(where, env) for where, env in found if "NATS_USER" in env or "NATS_NKEY_SEED_FILE" in env]


def test_every_component_reads_replies_only_on_its_own_inbox() -> None:
    accounts = (DEPLOY / "nats" / "accounts.conf").read_text()
    allowed = {
        role.lower(): re.findall(r'"(_INBOX[^"]*)"', block)
        for role, block in re.findall(
            r"SWITCHBOARD_(\w+)_PERMISSIONS = \{.*?subscribe: \{(.*?)\}", accounts, flags=re.S
        )
    }
    for pool in DEPLOYED_POOLS:  # each pool's workers: a user of their own (issue 17)
        block = re.search(
            rf"SWITCHBOARD_WORKER_{_token(pool)} = \{{.*?subscribe: \{{(.*?)\}}", accounts, re.S
        )
        assert block is not None, pool
        allowed[f"worker {pool}"] = re.findall(r'"(_INBOX[^"]*)"', block.group(1))
    assert set(allowed) == {"orchestrator", "ingest", "operator", *(f"worker {p}" for p in DEPLOYED_POOLS)}
    allowed = {role.split()[0]: inboxes for role, inboxes in allowed.items()}
    assert all(inboxes == [f"_INBOX_{role}.>"] for role, inboxes in allowed.items()), allowed
    clients = _nats_clients()
    assert len(clients) >= 5
    for where, env in clients:
        role = env.get("NATS_USER", "worker")
        assert env.get("NATS_INBOX_PREFIX") == f"_INBOX_{role}", (
            f"{where}: NATS_INBOX_PREFIX must be _INBOX_{role}"
        )
