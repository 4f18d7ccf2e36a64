"""Room connects that cannot take the worker down: never cut short, and the first of a process alone.

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

The first connect of a process goes alone. livekit rtc 1.1.21 makes its process-wide FFI client
on first use without a lock: two job threads whose connects are the process's first each make
one, and the events of one connect go to the other's queue — that connect hangs, and 15 s later
the FFI panics and SIGTERMs the worker (five jobs connecting at once on an idle 2-core machine had
lost a hand-off so; livekit 1.2.1 adds the lock, but livekit-agents 1.8.9 pins 1.1.21). Measured
in a fresh process, 10 threads connecting at once: 9 of 10 hung, in 3 runs of 3; with the client
made first, 10 of 10 connected within 0.57 s, in 20 runs of 20. So the first connect makes the
client under a lock, and from then on connects run side by side, :data:`CONNECTS_AT_ONCE` at a
time (they went one at a time until issue 16: ~0.1–0.3 s each, so a failover's ten rooms on one
process queued for 1–3 s; all at once, the 200-room drills broke down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from livekit.agents import JobContext

from agent_worker.rtc_native_logs import quiet_ffi_client

log = logging.getLogger(__name__)

# Process-wide by necessity: jobs run on different threads and event loops, and the FFI client
# they must not race to make is itself process-wide.
_FIRST = threading.Lock()
_FFI_MADE = threading.Event()
# Connects side by side, but a few at a time: with all of them at once, a 200-room burst (50 jobs
# per process on 2 cores) starved the worker's own loop (LiveKit's job assignments timed out,
# connects hit their 10 s signal timeout) and the drills lost rooms and doubled agents. Three
# pass them; five did not (drills 1, 2 and 5 failed). A failover's 5 rooms per process take two
# rounds: its p99 rose about 1 s against no bound. A window that started at six and halved on a
# connect slower than 1.5 s (TCP-like) cut that round, but lost 55 of drill 1's 200 rooms: the
# burst's first wide round is what starves the process, before any connect can report slowness.
CONNECTS_AT_ONCE = 3
_SLOTS = threading.BoundedSemaphore(CONNECTS_AT_ONCE)
SLOT_POLL_S = 0.05
# How long a cancelled job waits for its connect to finish; beyond it the FFI has given up anyway.
FINISH_CONNECT_S = 20.0


class DispatchWithdrawn(Exception):
    """The job's dispatch was deleted (the room was given to another agent) before it connected."""


def gate_connect(
    ctx: JobContext,
    still_wanted: Callable[[], Awaitable[bool]] | None = None,
    in_its_room: Callable[[], Awaitable[bool]] | None = None,
    on_connected: Callable[[], None] | None = None,
) -> None:
    """Make ``ctx.connect`` finish once begun, and the process's first one go alone.

    ``still_wanted``: asked right before connecting. A job can wait long for its turn (a busy
    worker, a burst of jobs); meanwhile the orchestrator may have replaced its dispatch and
    confirmed the old agent absent. Joining then would put a second agent in the room until its
    report gets it removed; :class:`DispatchWithdrawn` is raised instead.

    ``in_its_room``: asked right after connecting. A room deleted just before the connect is
    created again by it (LiveKit creates rooms on join): that is not the job's room, so the agent
    leaves it (and :class:`DispatchWithdrawn` is raised).

    ``on_connected``: called once the connect itself finished (the job's timeline).
    """
    original = ctx.connect

    async def connect(*args: Any, **kwargs: Any) -> None:
        await ffi_client_made()
        async with connect_slot():
            if still_wanted is not None and not await still_wanted():
                raise DispatchWithdrawn("the dispatch was withdrawn before the agent connected")
            await run_to_completion(original(*args, **kwargs), ctx.room.disconnect)
        if on_connected is not None:
            on_connected()
        if in_its_room is not None and not await in_its_room():
            await ctx.room.disconnect()
            raise DispatchWithdrawn("the job's room was deleted; connecting made a new, empty one")

    ctx.connect = connect  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def connect_slot() -> AsyncIterator[None]:
    """One of the process's :data:`CONNECTS_AT_ONCE` connect slots, held until the connect ends."""
    # Non-blocking tries, as in ffi_client_made: a cancelled waiter never holds a slot.
    while not _SLOTS.acquire(blocking=False):  # noqa: ASYNC110 (no Event spans the jobs' loops)
        await asyncio.sleep(SLOT_POLL_S)
    try:
        yield
    finally:
        _SLOTS.release()


async def ffi_client_made() -> None:
    """Make livekit rtc's FFI client, once per process, before any connect can race to make it;
    made without log capture (:mod:`agent_worker.rtc_native_logs`)."""
    if _FFI_MADE.is_set():
        return
    # Non-blocking tries: cancel-safe (a blocking acquire in a helper thread could take the lock
    # after this task was cancelled, and nobody would release it).
    while not _FIRST.acquire(blocking=False):  # noqa: ASYNC110 (no Event spans the jobs' loops)
        await asyncio.sleep(0.02)
    try:
        if not _FFI_MADE.is_set():
            quiet_ffi_client()
            _FFI_MADE.set()
    finally:
        _FIRST.release()


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
