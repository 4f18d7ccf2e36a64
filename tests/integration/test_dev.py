"""`switchboard dev` as a newcomer runs it: every demo room speaks within a bound, the failover
drill recovers every room of the killed pool, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest

from devstack.dev import ALL_SPEAKING

pytestmark = pytest.mark.integration
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
SPEAKING_WITHIN_S = 150.0


def descendants(root: int) -> set[int]:
    """Every live process whose parent chain leads to ``root`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def dev_env(data_dir: Path) -> dict[str, str]:
    env = {}
    for line in (data_dir / "dev.env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0]
    return env


async def test_dev_rooms_speak_drill_recovers_and_ctrl_c_cleans_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "dev"
    started = time.monotonic()
    dev = await asyncio.create_subprocess_exec(
        SWITCHBOARD, "dev", "--data-dir", str(data_dir), "--rooms", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert dev.stdout is not None
    output: list[str] = []
    tree: set[int] = set()
    try:
        async with asyncio.timeout(SPEAKING_WITHIN_S):
            while not any(ALL_SPEAKING in line for line in output):
                line = (await dev.stdout.readline()).decode()
                assert line, "dev exited early:\n" + "".join(output)
                output.append(line)
        print(f"dev: all demo rooms speaking {time.monotonic() - started:.1f}s after start")
        tree = descendants(dev.pid)
        assert len(tree) >= 6  # nats, livekit, ingest, orchestrator, two workers (and their children)

        # The drill, the way the dev banner says: with the env file dev wrote.
        env = {**os.environ, **dev_env(data_dir)}
        drill = await asyncio.create_subprocess_exec(
            SWITCHBOARD, "drill", "kill-pool", "eu-central-a", "--deadline", "60",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(drill.communicate(), 120)
        report = out.decode()
        print(report)
        assert drill.returncode == 0, report
        assert re.search(r"2/2 rooms recovered; p50 [\d.]+s, max [\d.]+s", report), report
        assert "ornina-demo-1" in report and "ornina-demo-3" in report and "on us-east-a" in report
        # Each room's recovery in phases, from its timeline (orchestrator/ops/recovery.py).
        phases = r"detect \+ decide [\d.]+s · .*room connect [\d.]+s · .*first audio [\d.]+s"
        assert len(re.findall(phases, report)) == 2, report
    finally:
        if dev.returncode is None:
            tree |= descendants(dev.pid)
            dev.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(dev.communicate(), 60)
        output.append(rest.decode())
    assert dev.returncode == 0, "".join(output)
    assert "stopped; nothing left running" in output[-1]
    left = sorted(pid for pid in tree if alive(pid))
    assert not left, f"processes left behind: {left}"
    assert not (data_dir / "dev-state.json").exists()
