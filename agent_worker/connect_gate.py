"""One room connect at a time per worker process.

With the thread executor every job of a worker shares one livekit rtc FFI client. When several
jobs connect at once, livekit rtc 1.1.21 can lose one job's ConnectCallback → ReadyForRoomEvent
hand-off; its FFI server then panics after 15 s and the SDK SIGTERMs the whole process, taking
every room of the worker with it (seen on an idle machine with 5 simultaneous connects; see
livekit/python-sdks#784). A connect takes ~0.1–0.3 s, so queueing them costs little and keeps
the hand-offs apart.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from livekit.agents import JobContext

# Process-wide by necessity: jobs run on different threads and event loops, and the FFI client
# they must not race on is itself process-wide.
_GATE = threading.Lock()


def gate_connect(ctx: JobContext) -> None:
    """Make ``ctx.connect`` wait for any other job of this process that is connecting."""
    original = ctx.connect

    async def connect(*args: Any, **kwargs: Any) -> None:
        # Non-blocking tries: cancel-safe (a blocking acquire in a helper thread could take the
        # lock after this task was cancelled, and nobody would release it).
        while not _GATE.acquire(blocking=False):  # noqa: ASYNC110 (no Event spans the jobs' loops)
            await asyncio.sleep(0.02)
        try:
            await original(*args, **kwargs)
        finally:
            _GATE.release()

    ctx.connect = connect  # type: ignore[method-assign]
