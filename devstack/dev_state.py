"""The small state file `switchboard dev` keeps in its data dir, so other commands find its parts.

``drill kill-pool`` reads it to kill a pool's worker processes itself (as a crash would) instead
of asking them over NATS. Written atomically; removed when `dev` stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from orchestrator.ops.drill import NothingToDrill

STATE_FILE = "dev-state.json"


class DevState(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    dev_pid: int
    data_dir: str
    nats_url: str
    livekit_url: str
    ingest_url: str
    # pool id -> PIDs of its worker processes (each the leader of its own process group)
    pools: dict[str, list[int]]


def write_state(data_dir: Path, state: DevState) -> Path:
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, path)
    return path


def read_state(path: Path) -> DevState:
    """``path`` is the state file or the dev data dir holding it."""
    if path.is_dir():
        path = path / STATE_FILE
    return DevState.model_validate(json.loads(path.read_text()))


def kill_dev_pool(state: DevState, pool: str) -> str:
    """SIGKILL the pool's worker process groups, as a crash would (the drill's :data:`PoolKiller`)."""
    pids = state.pools.get(pool)
    if not pids:
        raise NothingToDrill(
            f"the dev stack has no worker processes for pool {pool} (has: {', '.join(state.pools)})"
        )
    for pid in pids:
        # Each worker leads its own process group: whatever it started dies with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    return f"SIGKILL to {len(pids)} worker process group(s) {pids}"
