"""Room connects that cannot take the worker down: one at a time per process, never cut short.

livekit rtc 1.1.21's ``Room.connect`` is not cancellation-safe (livekit/python-sdks#784): its
FFI server answers the connect request, then waits for the ``ReadyForRoomEvent`` request that
``connect`` sends as its very last statement. A connect cancelled in between never sends it; 15 s
later the FFI panics and the SDK SIGTERMs its whole process. With the thread executor that is
every room of the worker. Cancellation is ordinary here: the orchestrator's join deadline
redispatches a room whose agent is slow to join, LiveKit ends the old job, and livekit-agents
cancels its entrypoint mid-connect. In the full 200-room drill one such cancel took a worker and
its 60 rooms down.

So a connect that has begun runs to its end even when the job is cancelled: the cancellation
waits for it (bounded), the room is left again at once, and then the cancellation goes on.
livekit-agents waits for a cancelled entrypoint to finish (``cancel_and_wait``), so the job's loop
is still there while it does.

Connects also go one at a time per process: five jobs connecting at once on an idle 2-core
machine lost a hand-off the same way. A connect takes ~0.1–0.3 s, so queueing them costs little.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from livekit.agents import JobContext

log = logging.getLogger(__name__)

# Process-wide by necessity: jobs run on different threads and event loops, and the FFI client
# they must not race on is itself process-wide.
_GATE = threading.Lock()
# How long a cancelled job waits for its connect to finish; beyond it the FFI has given up anyway.
FINISH_CONNECT_S = 20.0


class DispatchWithdrawn(Exception):
    """The job's dispatch was deleted (the room was given to another agent) before it connected."""


def gate_connect(
    ctx: JobContext,
    still_wanted: Callable[[], Awaitable[bool]] | None = None,
    in_its_room: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Make ``ctx.connect`` wait for the other connects of this process, and finish once begun.

    ``still_wanted``: asked right before connecting. A job can wait long for its turn (a busy
    worker, a burst of jobs); meanwhile the orchestrator may have replaced its dispatch and
    confirmed the old agent absent. Joining then would put a second agent in the room until its
    report gets it removed; :class:`DispatchWithdrawn` is raised instead.

    ``in_its_room``: asked right after connecting. A room deleted just before the connect is
    created again by it (LiveKit creates rooms on join): that is not the job's room, so the agent
    leaves it (and :class:`DispatchWithdrawn` is raised).
    """
    original = ctx.connect

    async def connect(*args: Any, **kwargs: Any) -> None:
        # Non-blocking tries: cancel-safe (a blocking acquire in a helper thread could take the
        # lock after this task was cancelled, and nobody would release it).
        while not _GATE.acquire(blocking=False):  # noqa: ASYNC110 (no Event spans the jobs' loops)
            await asyncio.sleep(0.02)
        try:
            if still_wanted is not None and not await still_wanted():
                raise DispatchWithdrawn("the dispatch was withdrawn before the agent connected")
            await run_to_completion(original(*args, **kwargs), ctx.room.disconnect)
            if in_its_room is not None and not await in_its_room():
                await ctx.room.disconnect()
                raise DispatchWithdrawn("the job's room was deleted; connecting made a new, empty one")
        finally:
            _GATE.release()

    ctx.connect = connect  # type: ignore[method-assign]


async def run_to_completion(
    connecting: Awaitable[None], leave: Callable[[], Awaitable[None]], finish_s: float = FINISH_CONNECT_S
) -> None:
    """Await ``connecting``; if cancelled meanwhile, let it finish (within ``finish_s``, through any
    further cancellation), ``leave``, then raise the cancellation."""
    task = asyncio.ensure_future(connecting)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await _outlast(task, finish_s)
        if task.done() and not task.cancelled() and task.exception() is None:
            with contextlib.suppress(Exception):
                await leave()
        raise


async def _outlast(task: asyncio.Future[None], finish_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + finish_s
    while not task.done() and (left := deadline - loop.time()) > 0:
        # Swallowing the job's cancellation for a moment is the point: see the module doc.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([task], timeout=left)
    if not task.done():
        log.warning("room connect still unfinished %.0fs after the job was cancelled", finish_s)
    elif not task.cancelled() and task.exception() is not None:
        log.info("room connect of a cancelled job failed: %s", task.exception())
