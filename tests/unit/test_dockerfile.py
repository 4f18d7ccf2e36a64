"""The Dockerfile's shape, and that it agrees with the lock, scripts/setup and the deploy manifests.

tests/integration/test_image_install.py runs its build stage; this checks what cannot be run here:
the runtime stage (slim base, espeak-ng, non-root user, entrypoint) and the wiring around it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests import imagekit

ROOT = imagekit.ROOT
UV = Path(sys.executable).parent / "uv"


def _runtime() -> imagekit.Stage:
    return imagekit.parse().final


def _runtime_runs() -> str:
    return "\n".join(ins.args for ins in _runtime().all("RUN"))


def test_runtime_stage_is_a_slim_python_image_without_a_healthcheck() -> None:
    dockerfile = imagekit.parse()
    assert len(dockerfile.stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", dockerfile.final.base), dockerfile.final.base
    assert not dockerfile.final.all("HEALTHCHECK"), "Kubernetes probes /healthz; no HEALTHCHECK"
    env = dockerfile.final.env()
    assert env.get("PYTHONUNBUFFERED") == "1"
    labels: dict[str, str] = {}
    for ins in dockerfile.final.all("LABEL"):
        labels.update(ins.assignments())
    for key in ("title", "description", "licenses", "version"):
        assert f"org.opencontainers.image.{key}" in labels


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    users = _runtime().all("USER")
    assert users, "the runtime stage must set USER"
    user = users[-1].args.split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert user.isdigit() and int(user) != 0, f"USER {users[-1].args}: want a numeric non-root uid"
    created = re.search(r"useradd\b[^&;]*--uid\s+(\d+)", _runtime_runs())
    assert created and created.group(1) == user, "the USER's uid must be created (useradd --uid) in the image"


def test_espeak_ng_is_installed_lean() -> None:
    runs = _runtime_runs()
    install = re.search(r"apt-get install ([^&;]*)", runs)
    assert install, "the runtime stage installs no Debian packages"
    assert "espeak-ng" in install.group(1).split(), "espeak-ng (the default agent's voice) is missing"
    assert "--no-install-recommends" in install.group(1)
    assert "rm -rf /var/lib/apt/lists" in runs, "apt lists stay in the image"


def test_build_stage_installs_the_venv_from_the_lock_without_extras() -> None:
    dockerfile = imagekit.parse()
    build = dockerfile.stages[0]
    copied = [word for ins in build.all("COPY") for word in ins.words()[:-1]]
    assert "uv.lock" in copied and "pyproject.toml" in copied
    assert "scripts/install-runtime" in copied
    installs = [ins.words() for ins in build.all("RUN") if "install-runtime" in ins.args]
    assert installs, "the build stage must install the venv with scripts/install-runtime"
    assert all(words[0] == "scripts/install-runtime" for words in installs)
    # The same lock-bound, extra-free install as the test that replays it.
    script = (ROOT / "scripts" / "install-runtime").read_text()
    sync = next(line for line in script.splitlines() if " sync " in line and not line.startswith("#"))
    assert "--locked" in sync or "--frozen" in sync, sync
    assert "--no-editable" in sync and "--no-dev" in sync, sync
    assert not re.search(r"--(extra|all-extras|group|all-groups)\b", sync), sync
    # Nothing else installs Python packages, in either stage.
    for stage in dockerfile.stages:
        for ins in stage.all("RUN"):
            if re.search(r"\b(pip|uv) (pip )?install\b", ins.args):
                assert re.search(r"\buv==", ins.args), f"unexpected package install: RUN {ins.args}"
    # The runtime stage takes the venv, nothing else, from the build stage.
    from_build = [ins for ins in dockerfile.final.all("COPY") if "from" in ins.split_flags()[0]]
    assert len(from_build) == 1 and from_build[0].words() == ["/opt/venv", "/opt/venv"]
    assert dockerfile.final.env()["PATH"].startswith("/opt/venv/bin:")


def test_every_project_package_is_copied_into_the_build() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {ins.words()[0].rstrip("/") for ins in imagekit.parse().stages[0].all("COPY")}
    missing = [p for p in (i.rstrip("*") for i in includes) if p not in copied]
    assert not missing, f"pyproject.toml packages the Dockerfile does not COPY: {missing}"
    assert pyproject["project"]["readme"] in copied, "setuptools needs the readme to build the project"


def test_uv_is_pinned_to_one_version_everywhere() -> None:
    image = imagekit.parse().stages[0].args()["UV_VERSION"]
    setup = re.search(r"^uv_version=(\S+)$", (ROOT / "scripts" / "setup").read_text(), re.M)
    assert setup and setup.group(1) == image, "scripts/setup and the Dockerfile pin different uv versions"
    version = subprocess.run([str(UV), "--version"], capture_output=True, text=True, check=True).stdout
    here = version.split()[1]
    assert here == image, f".venv has uv {here}, the image pins {image}: run scripts/setup"


def test_uv_lock_is_up_to_date_with_pyproject() -> None:
    proc = subprocess.run([str(UV), "lock", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    stale = "uv.lock is out of date with pyproject.toml: run `.venv/bin/uv lock` and commit uv.lock"
    assert proc.returncode == 0, f"{stale}\n{proc.stderr}"


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_context() -> None:
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".env", "**/.env"} <= patterns


def _commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every container that runs the switchboard image, from compose and k8s."""
    out: list[tuple[str, list[str]]] = []
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        if "switchboard" in str(svc.get("image", "")):
            assert "entrypoint" not in svc, f"compose {name} overrides the image's entrypoint"
            out.append((f"compose {name}", svc["command"]))
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec: dict[str, Any] = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                if container.get("image", "").startswith("switchboard"):
                    assert "command" not in container, f"{path.name} overrides the image's entrypoint"
                    out.append((f"{path.name} {container['name']}", container["args"]))
    return out


def test_deploy_commands_run_under_the_image_entrypoint() -> None:
    runtime = _runtime()
    entrypoint = runtime.all("ENTRYPOINT")[-1].words()
    assert "switchboard" not in " ".join(entrypoint), "the manifests' commands start with `switchboard`"
    assert runtime.all("CMD")[-1].words()[0] == "switchboard"
    commands = _commands()
    assert len(commands) >= 5, commands  # orchestrators, ingest, pools in compose; k8s deployments
    for where, argv in commands:
        assert argv[0] == "switchboard" and argv[1] != "switchboard", f"{where}: {argv}"
