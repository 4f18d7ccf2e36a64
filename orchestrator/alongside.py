"""Run a helper coroutine for exactly as long as a block runs (lease renewal, in_progress acks)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


@contextlib.asynccontextmanager
async def alongside(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Start ``work`` as a task, run the block, then cancel the task and wait for it to end.

    A plain task created and awaited in this scope, not a TaskGroup: a TaskGroup would wrap the
    block's own exception (a LiveKitCallError, a handler's error) in an ExceptionGroup.
    """
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
