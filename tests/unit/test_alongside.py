"""orchestrator.alongside: the helper ends with the block, even when one cancel is swallowed."""

from __future__ import annotations

import asyncio
import contextlib

from orchestrator.alongside import alongside


async def test_a_helper_that_swallows_a_cancel_is_cancelled_again() -> None:
    """Python 3.11's wait_for (nats-py's request: every KV update of a lease renewal) swallows a
    cancel that lands as its answer arrives; the helper must still stop with the block."""
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[None] | None = None
    asked = asyncio.Event()
    renewals = 0

    async def keep() -> None:  # shaped like Lease.keep: sleep, then one request per renewal
        nonlocal reply, renewals
        while True:
            await asyncio.sleep(0.01)
            reply = loop.create_future()
            asked.set()
            if renewals:
                loop.call_soon(reply.set_result, None)
            await asyncio.wait_for(reply, 5.0)
            renewals += 1

    async with asyncio.timeout(2):
        async with alongside(keep(), "renewal"):
            await asked.wait()  # the first renewal's request is in flight
            assert reply is not None
            reply.set_result(None)  # answered in the very iteration in which the block ends
    assert task_ended(renewals)


def task_ended(renewals: int) -> bool:
    return renewals < 100  # it ended within the timeout (a few renewals between two cancels)


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    helper: list[asyncio.Task[object] | None] = []

    async def stubborn() -> None:
        helper.append(asyncio.current_task())
        swallowed = 0
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed >= 5:  # swallows a few cancels, then ends (the test ends cleanly)
                    raise

    async def block() -> None:
        async with alongside(stubborn(), "stubborn"):
            await asyncio.sleep(0.01)  # the helper is running when the block ends

    task = asyncio.create_task(block())
    await asyncio.sleep(0.08)  # alongside is cancelling the stubborn helper again and again
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    assert task.cancelled()
    [stray] = helper
    assert stray is not None
    while not stray.done():
        stray.cancel()
        await asyncio.wait({stray}, timeout=0.05)
