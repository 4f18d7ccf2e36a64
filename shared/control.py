"""Commands to one pool's workers on ``switchboard.pools.<pool>.control`` (core NATS).

``drain``: stop taking jobs, let running ones finish (up to the worker's grace period), leave.
``exit``: hard-exit the worker process at once, as a crash would (failover drills); a worker obeys
only when its config sets ``worker.allow_remote_kill``.
"""

from __future__ import annotations

from typing import Literal

from shared.messages import Identifier, Message, Reason

PoolCommandName = Literal["drain", "exit"]


class PoolCommand(Message):
    v: Literal[1] = 1
    command: PoolCommandName
    reason: Reason | None = None
    # One worker of the pool (its heartbeat's ``worker``); None addresses every worker of the pool.
    worker: Identifier | None = None
