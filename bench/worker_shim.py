"""``switchboard worker`` with one benchmark-only knob, and nothing else changed.

    python -m bench.worker_shim worker --agent A --region R --pool P ...   (the usual worker options)

- ``BENCH_AUTO_DISPATCH_PREFIX``: register with LiveKit with an **empty agent_name** — LiveKit's
  built-in automatic dispatch, a job for every new room — and accept only rooms whose name starts
  with the prefix (others are rejected, so the Switchboard rooms of the same run keep exactly one
  agent). This is the baseline of the dispatch-path comparison: the same AgentServer settings, the
  same job wrapper and the same default agent as a Switchboard pool worker; only the dispatch differs.

Without it this is exactly ``switchboard worker``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from livekit.agents import AgentServer, JobRequest


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
    prefix = os.environ.get("BENCH_AUTO_DISPATCH_PREFIX")
    if prefix:
        _patch_auto_dispatch(prefix)
    from switchboard.cli import main as switchboard

    sys.argv[0] = "switchboard"
    switchboard()


if __name__ == "__main__":
    main()
