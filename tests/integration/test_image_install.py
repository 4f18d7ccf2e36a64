"""The container image's Python environment, built the way the Dockerfile builds it, without a container.

No container builder can pull a base image here, so this test replays the Dockerfile's build stage
(read from the Dockerfile itself, so the two cannot drift): its ENV, WORKDIR and COPY instructions
(honouring .dockerignore) into a scratch "image root", then its RUN steps, which call
scripts/install-runtime from uv.lock. Then it proves what the runtime stage copies (the venv) works on
its own: the source tree is deleted, `switchboard --help` and `switchboard worker --help` run, no dev
tool is installed, and every installed version is the one uv.lock pins (what CI tested).
A RUN this test does not know how to replay fails it: teach it, rather than letting the image drift.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests import imagekit

pytestmark = pytest.mark.integration

ROOT = imagekit.ROOT
UV = Path(sys.executable).parent / "uv"  # scripts/setup installs the pinned uv into .venv
SUBCOMMANDS = ("orchestrator", "ingest", "worker", "status", "explain", "dispatch", "drain", "doctor")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "teach _ignored() about ! exceptions"
    return patterns


def _ignored(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            return True
    return False


def _copy(ins: imagekit.Instruction, workdir: Path, image_root: Path, patterns: list[str]) -> None:
    """Docker's COPY: a directory source copies its contents; a file goes into dest/ or becomes dest."""
    flags, _ = ins.split_flags()
    assert "from" not in flags, f"the build stage copies from another stage: {ins.args}"
    *sources, dest = ins.words()
    target = image_root / dest.lstrip("/") if dest.startswith("/") else workdir / dest
    into_dir = dest.endswith("/") or len(sources) > 1
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the build context"
        assert not _ignored(source.rstrip("/"), patterns), f"COPY {source}: excluded by .dockerignore"
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                relative = file.relative_to(ROOT).as_posix()
                if not _ignored(relative, patterns):
                    out = target / file.relative_to(path)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, out)
        else:
            out = target / path.name if into_dir else target
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)


def _run(
    ins: imagekit.Instruction, args: dict[str, str], workdir: Path, image_root: Path, env: dict[str, str]
) -> None:
    command = imagekit.substitute(ins.split_flags()[1], args)
    if re.fullmatch(r"pip install .*\buv==[0-9.]+\"?", command):
        # The image's uv: the test uses .venv's, which scripts/setup pins to the same version.
        wanted = re.search(r"uv==([0-9.]+)", command)
        assert wanted is not None
        version = subprocess.run([str(UV), "--version"], capture_output=True, text=True, check=True).stdout
        assert version.split()[1] == wanted.group(1), f"{UV} is {version.strip()}; the image pins {wanted[1]}"
        return
    words = ins.words()
    assert words[0] == "scripts/install-runtime", (
        f"test_image_install cannot replay `RUN {command}` outside a container: teach it"
    )
    argv = [str(workdir / words[0])]
    argv += [str(image_root / w.lstrip("/")) if w.startswith("/") else w for w in words[1:]]
    proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"RUN {command} failed:\n{proc.stdout}\n{proc.stderr}"


def _runtime_venv(dockerfile: imagekit.Dockerfile) -> tuple[str, str]:
    """(build stage name, venv path) of the runtime stage's ``COPY --from=<build> <venv> <venv>``."""
    for ins in dockerfile.final.all("COPY"):
        flags, _ = ins.split_flags()
        if "from" in flags:
            source, dest = ins.words()
            assert source == dest, "the venv must keep its path: its scripts' shebangs point into it"
            return flags["from"], source
    raise AssertionError("the runtime stage copies no venv from the build stage")


def test_image_build_stage_installs_a_working_runtime_from_the_lock(tmp_path: Path) -> None:
    dockerfile = imagekit.parse()
    build_name, venv_path = _runtime_venv(dockerfile)
    build = dockerfile.stage(build_name)
    image_root = tmp_path / "image"
    workdir = image_root
    patterns = _dockerignore()
    stage_args = {**dockerfile.global_args, **build.args()}

    outer = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if k not in outer}
    env.update(build.env())
    # The differences from the image: this machine's interpreter (the base of .venv: the Python that
    # runs the tests) and uv (pinned to the image's version, checked below); and two settings that change
    # how files land, not which: bytecode compilation (~10 s here) and copying instead of hard-linking
    # from uv's cache (the image's cache is a mount on another filesystem).
    env["UV_PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    env["UV"] = str(UV)
    env.pop("UV_COMPILE_BYTECODE", None)
    env.pop("UV_LINK_MODE", None)

    started = time.monotonic()
    for ins in build.instructions:
        if ins.keyword == "WORKDIR":
            workdir = image_root / ins.args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            _copy(ins, workdir, image_root, patterns)
        elif ins.keyword == "RUN":
            _run(ins, stage_args, workdir, image_root, env)
        else:
            assert ins.keyword in ("ARG", "ENV", "LABEL"), f"teach this test the build stage's {ins.keyword}"
    installed_in = time.monotonic() - started

    venv = image_root / venv_path.lstrip("/")
    # The runtime stage gets the venv only: nothing from the source tree may be needed.
    shutil.rmtree(workdir)
    clean = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"}

    def switchboard(*args: str) -> str:
        proc = subprocess.run(
            [str(venv / "bin" / "switchboard"), *args],
            cwd=tmp_path,
            env=clean,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"switchboard {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    top = switchboard("--help")
    missing = [name for name in SUBCOMMANDS if not re.search(rf"\b{name}\b", top)]
    assert not missing, f"`switchboard --help` lists no {missing}:\n{top}"
    worker = switchboard("worker", "--help")
    for option in ("--agent", "--region", "--pool", "--capacity", "--entrypoint"):
        assert option in worker, f"`switchboard worker --help` has no {option}:\n{worker}"

    # What is installed: the locked base dependencies and the project, as regular (non-editable) files.
    listing = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m, json, switchboard\n"
            "print(json.dumps({'file': switchboard.__file__,"
            " 'dists': {d.metadata['Name']: d.version for d in m.distributions()}}))",
        ],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        check=True,
    )
    facts = json.loads(listing.stdout)
    assert Path(facts["file"]).is_relative_to(venv), f"switchboard imported from {facts['file']}"
    installed = {_normalize(name): version for name, version in facts["dists"].items()}

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [req for reqs in project["optional-dependencies"].values() for req in reqs]
    extra_names = {_normalize(re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0]) for req in extras}
    dev_tools = sorted(extra_names & installed.keys())
    assert not dev_tools, f"the runtime venv has dev/bench packages: {dev_tools}"
    assert {"pytest", "mypy", "ruff"}.isdisjoint(installed), "dev tools in the runtime venv"

    locked: dict[str, set[str]] = {}  # a package may be locked at one version per Python-version fork
    for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]:
        locked.setdefault(_normalize(package["name"]), set()).add(package.get("version", ""))
    unlocked = {name: v for name, v in installed.items() if v not in locked.get(name, set())}
    assert not unlocked, f"installed versions that uv.lock does not pin: {unlocked}"
    assert "livekit-agents" in installed and "switchboard" in installed
    print(f"\nbuild stage replayed in {installed_in:.1f}s ({len(installed)} distributions)")
