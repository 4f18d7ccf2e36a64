"""How livekit-agents' event-loop monitor runs in this worker.

livekit-agents 1.8.9 starts a monitor on every job executor's loop, warm idle ones included: a
``call_later`` tick and a watchdog thread, each waking every 20 ms at the default 100 ms warn
threshold. With the thread executor every executor of the process shares one GIL, so a worker
with capacity 60 wakes ~6,000 times a second doing nothing: 28 % of a core at idle, 1.3 % with the
monitor off (measured, see agent_worker/README.md). Under a burst the convoy starved the worker's
own loop for seconds, its heartbeats stopped and the orchestrator declared live pools dead.

So the monitor is off by default for threads and left to livekit-agents for processes (one GIL
each). ``--loop-monitor-ms`` turns it on at that warn threshold; an explicit
``LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS`` in the environment is honoured as given.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from agent_worker.options import WorkerOptions

LIVEKIT_ENV = "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS"


def configure_loop_monitor(opts: WorkerOptions, environ: MutableMapping[str, str]) -> str:
    """Set livekit-agents' monitor threshold in ``environ`` (read by every executor it starts, and
    inherited by job processes); returns what was decided, for the start-up log line."""
    if opts.loop_monitor_ms is not None:
        environ[LIVEKIT_ENV] = str(opts.loop_monitor_ms)
    elif LIVEKIT_ENV in environ:
        return f"loop monitor: {LIVEKIT_ENV}={environ[LIVEKIT_ENV]} from the environment"
    elif opts.executor == "thread":
        environ[LIVEKIT_ENV] = "0"
    else:
        return "loop monitor: livekit-agents' default (warn at 100 ms) in each job process"
    value = environ[LIVEKIT_ENV]
    return "loop monitor: off" if value == "0" else f"loop monitor: warn at {value} ms"
