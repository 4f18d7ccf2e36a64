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
        await _stop(task)


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` until it has ended. Python 3.11's ``asyncio.wait_for`` (nats-py's request,
    so every KV update of a lease renewal) swallows a cancel that lands as its answer arrives: one
    cancel is then not enough, and waiting on the task would wait for ever. ``asyncio.wait`` never
    swallows the caller's own cancellation."""
    task.cancel()
    while not task.done():
        await asyncio.wait({task}, timeout=0.05)
        if not task.done():
            task.cancel()
    if not task.cancelled():
        task.result()  # the helper's own failure, as before
