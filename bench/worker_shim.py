"""``switchboard worker`` with two benchmark-only knobs, and nothing else changed.

    python -m bench.worker_shim worker --agent A --region R --pool P ...   (the usual worker options)

- ``BENCH_HEARTBEAT_INTERVAL_S``: the worker's heartbeat interval (``WorkerOptions.heartbeat_interval_s``,
  1 s by default, not exposed on the command line), for the failover row with faster heartbeats.
- ``BENCH_AUTO_DISPATCH_PREFIX``: register with LiveKit with an **empty agent_name** — LiveKit's
  built-in automatic dispatch, a job for every new room — and accept only rooms whose name starts
  with the prefix (others are rejected, so the Switchboard rooms of the same run keep exactly one
  agent). This is the baseline of the dispatch-path comparison: the same AgentServer settings, the
  same job wrapper and the same default agent as a Switchboard pool worker; only the dispatch differs.

Without either variable this is exactly ``switchboard worker``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from livekit.agents import AgentServer, JobRequest


def _patch_heartbeat(interval: float) -> None:
    import agent_worker.cli as worker_cli

    resolve = worker_cli.resolve_options  # type: ignore[attr-defined]

    def with_interval(*args: Any, **kwargs: Any) -> Any:
        return resolve(*args, **kwargs).model_copy(update={"heartbeat_interval_s": interval})

    worker_cli.resolve_options = with_interval  # type: ignore[attr-defined]


def _patch_auto_dispatch(prefix: str) -> None:
    import agent_worker.runtime as runtime

    build = runtime.build_agent_server  # type: ignore[attr-defined]

    def automatic(*args: Any, **kwargs: Any) -> AgentServer:
        server = build(*args, **kwargs)
        # livekit-agents 1.8.x keeps these on the server; fail loudly if that ever changes.
        for attr in ("_agent_name", "_request_fnc"):
            if not hasattr(server, attr):
                raise RuntimeError(f"livekit-agents AgentServer has no {attr}; update bench/worker_shim.py")
        accept = server._request_fnc
        assert accept is not None
        server._agent_name = ""  # empty agent_name: LiveKit dispatches to us automatically

        async def only_ours(request: JobRequest) -> None:
            if request.room.name.startswith(prefix):
                await accept(request)
            else:
                await request.reject()

        server._request_fnc = only_ours
        return server

    runtime.build_agent_server = automatic  # type: ignore[attr-defined]


def main() -> None:
    interval = os.environ.get("BENCH_HEARTBEAT_INTERVAL_S")
    if interval:
        _patch_heartbeat(float(interval))
    prefix = os.environ.get("BENCH_AUTO_DISPATCH_PREFIX")
    if prefix:
        _patch_auto_dispatch(prefix)
    from orchestrator.cli import main as switchboard

    sys.argv[0] = "switchboard"
    switchboard()


if __name__ == "__main__":
    main()
