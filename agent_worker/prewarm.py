"""The user's prewarm (livekit-agents' ``setup_fnc``/``prewarm_fnc``): where and how often it runs.

livekit-agents calls it once per *executor*, with a fresh ``JobProcess``. For the process executor
that is once per job process, which is what a prewarm is for (load the VAD model once, use it in
the job). For the thread executor it is once per job *thread*: every job would load the model
again, ``--capacity`` of them at once while the warm executors start. So:

- **thread executor**: the prewarm runs once per worker process, at start (before registering
  with LiveKit); each job thread's ``proc.userdata`` starts as a copy of that userdata — the same
  objects, shared by the process's concurrent jobs, in a dict of the job's own.
- **process executor**: it runs in each job process (after Switchboard's own setup). At start the
  worker runs it once in a fresh Python process, so a broken prewarm stops the worker with a clear
  message instead of failing every job process later, and the worker itself stays free of the
  model.

Either way a prewarm that raises at start stops the worker (exit 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from typing import Any

from livekit.agents import JobExecutorType, JobProcess

from agent_worker.entrypoints import EntrypointError, UserAgent, resolve_agent

log = logging.getLogger(__name__)

# livekit-agents gives a process 30 s to prewarm here (agent_server.INITIALIZE_TIMEOUT_S); the
# fresh process also imports livekit-agents and the user's module first.
CHECK_TIMEOUT_S = 90.0
CHECK_FAILED = 2


def run_prewarm(agent: UserAgent, executor: JobExecutorType) -> dict[Any, Any]:
    """Run the prewarm on a ``JobProcess`` of its own; its userdata, or :class:`EntrypointError`."""
    proc = JobProcess(executor_type=executor, user_arguments=None, http_proxy=None)
    if agent.prewarm is not None:
        try:
            agent.prewarm(proc)
        except Exception as exc:
            log.error("prewarm of %s failed", agent.reference, exc_info=exc)
            raise EntrypointError(
                f"prewarm {agent.prewarm_source} of {agent.reference} failed: {type(exc).__name__}: {exc}"
            ) from exc
    return proc.userdata


def prewarm_at_start(entrypoint: str | None, prewarm: str | None, executor: str) -> dict[Any, Any] | None:
    """Before the worker registers: run (threads) or check (processes) the prewarm, if any.

    Threads: the userdata it made, which every job thread of this process starts from (the worker
    hands it to :class:`agent_worker.agent_server.PrepareJobProcess`). Processes: None, as each job
    process runs the prewarm itself."""
    agent = resolve_agent(entrypoint, prewarm)
    if agent.prewarm is None:
        return None
    if executor == "thread":
        return run_prewarm(agent, JobExecutorType.THREAD)
    check_in_fresh_process(entrypoint, prewarm)
    return None


def check_in_fresh_process(entrypoint: str | None, prewarm: str | None) -> None:
    """Run the prewarm once in a new Python process, the way a job process would; raise if it fails."""
    argv = [sys.executable, "-m", "agent_worker.prewarm", "--entrypoint", entrypoint or ""]
    if prewarm:
        argv += ["--prewarm", prewarm]
    # The job processes import what the worker can import: give the check the same sys.path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise EntrypointError(
            f"prewarm of {entrypoint} did not finish within {CHECK_TIMEOUT_S:.0f}s in a fresh process"
        ) from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        log.error("prewarm check of %s in a fresh process:\n%s", entrypoint, output[-4000:])
        last = output.splitlines()[-1] if output else f"exit code {done.returncode}"
        raise EntrypointError(last.removeprefix("switchboard prewarm check: "))


def _check_main() -> None:
    parser = argparse.ArgumentParser(prog="python -m agent_worker.prewarm")
    parser.add_argument("--entrypoint", default="")
    parser.add_argument("--prewarm", default=None)
    args = parser.parse_args()
    try:
        run_prewarm(resolve_agent(args.entrypoint or None, args.prewarm), JobExecutorType.PROCESS)
    except EntrypointError as exc:
        print(f"switchboard prewarm check: {exc}", file=sys.stderr)
        raise SystemExit(CHECK_FAILED) from None


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    _check_main()
