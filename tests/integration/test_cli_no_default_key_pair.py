"""No insecure default outside `switchboard dev` (issue 17): the orchestrator, the ingest and a
worker started as the README shows, without LIVEKIT_API_KEY / LIVEKIT_API_SECRET, refuse to start,
naming the variables; they used to fall back to livekit-server's public dev pair."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


def _without_livekit_pair(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "SWITCHBOARD_"))}
    return {**env, **extra}


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["orchestrator"], "the orchestrator dispatches agents with it"),
        (["ingest"], "the ingest verifies LiveKit's webhooks with it"),
        (["worker", "--pool", "eu-central-a", "--region", "eu-central", "--agent", "ornina"], "registers"),
    ],
)
def test_a_process_without_the_livekit_key_pair_refuses_to_start(
    command: list[str], says: str, tmp_path: Path
) -> None:
    # tmp_path: no .env to read; nothing listens for NATS or LiveKit, and nothing needs to.
    (tmp_path / "switchboard.yaml").write_text("rules: [{name: all, match: '*', agent: ornina}]\n")
    proc = subprocess.run(
        [SWITCHBOARD, *command],
        cwd=tmp_path,
        env=_without_livekit_pair(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "LIVEKIT_API_KEY and LIVEKIT_API_SECRET not set" in proc.stderr and says in proc.stderr


def test_half_a_pair_is_named(tmp_path: Path) -> None:
    (tmp_path / "switchboard.yaml").write_text("rules: [{name: all, match: '*', agent: ornina}]\n")
    proc = subprocess.run(
        [SWITCHBOARD, "orchestrator"],
        cwd=tmp_path,
        env=_without_livekit_pair(LIVEKIT_API_KEY="APIabc"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        "LIVEKIT_API_SECRET not set" in proc.stderr
        and "LIVEKIT_API_KEY" not in proc.stderr.split("not set")[0]
    )
