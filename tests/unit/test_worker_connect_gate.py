"""A room connect that has begun finishes even when its job is cancelled (livekit/python-sdks#784:
a cut-short connect makes the FFI SIGTERM the whole worker 15 s later)."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from livekit.agents import JobContext
from livekit.rtc._ffi_client import FfiClient

from agent_worker.connect_gate import DispatchWithdrawn, gate_connect, run_to_completion


class Room:
    def __init__(self, fail: bool = False) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.connected = False
        self.left = False
        self.fail = fail

    async def connect(self) -> None:
        self.started.set()
        await self.release.wait()
        if self.fail:
            raise ConnectionError("signal connection refused")
        self.connected = True

    async def leave(self) -> None:
        self.left = True


async def test_a_cancelled_job_waits_for_its_connect_then_leaves_and_stays_cancelled() -> None:
    room = Room()
    job = asyncio.create_task(run_to_completion(room.connect(), room.leave))
    await room.started.wait()
    job.cancel()
    await asyncio.sleep(0)
    job.cancel()  # cancelled again while it waits: still waits
    await asyncio.sleep(0)
    assert not job.done()
    room.release.set()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert room.connected and room.left


async def test_a_connect_that_fails_after_the_cancel_is_not_left() -> None:
    room = Room(fail=True)
    job = asyncio.create_task(run_to_completion(room.connect(), room.leave))
    await room.started.wait()
    job.cancel()
    room.release.set()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert not room.connected and not room.left


async def test_the_wait_is_bounded() -> None:
    room = Room()
    job = asyncio.create_task(run_to_completion(room.connect(), room.leave, finish_s=0.05))
    await room.started.wait()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job  # the connect does not finish in time: the job is let go after finish_s
    assert not room.left
    room.release.set()  # let the stranded connect end with the test


async def test_without_a_cancel_it_is_just_the_connect() -> None:
    room = Room()
    room.release.set()
    await run_to_completion(room.connect(), room.leave)
    assert room.connected and not room.left


class JobRoom(Room):
    async def disconnect(self) -> None:
        await self.leave()


class Ctx:
    """What gate_connect touches of a JobContext: ``connect`` and ``room.disconnect``."""

    def __init__(self) -> None:
        self.room = JobRoom()
        self.room.release.set()
        self.connect = self.room.connect


@pytest.mark.parametrize("wanted", [True, False])
async def test_a_job_whose_dispatch_was_withdrawn_while_it_waited_does_not_join(wanted: bool) -> None:
    ctx = Ctx()
    asked: list[bool] = []

    async def still_wanted() -> bool:
        asked.append(True)
        return wanted

    gate_connect(cast(JobContext, ctx), still_wanted)
    if wanted:
        await ctx.connect()
    else:
        with pytest.raises(DispatchWithdrawn):
            await ctx.connect()
    assert asked == [True] and ctx.room.connected is wanted
    # The gate is free again either way: the next job connects at once.
    other = Ctx()
    gate_connect(cast(JobContext, other))
    async with asyncio.timeout(1):
        await other.connect()
    assert other.room.connected


@pytest.mark.parametrize("its_room", [True, False])
async def test_a_job_that_connected_to_a_room_made_anew_leaves_it(its_room: bool) -> None:
    """A room deleted between the check and the connect is created again by the connect: not the
    job's room (another sid), so the agent leaves it and the job ends as withdrawn."""
    ctx = Ctx()

    async def in_its_room() -> bool:
        return its_room

    gate_connect(cast(JobContext, ctx), None, in_its_room)
    if its_room:
        await ctx.connect()
    else:
        with pytest.raises(DispatchWithdrawn, match="deleted"):
            await ctx.connect()
    assert ctx.room.connected and ctx.room.left is not its_room


async def test_connects_run_side_by_side_once_the_ffi_client_is_made() -> None:
    """The process's FFI client is made before the first connect (under a lock: livekit rtc
    1.1.21 makes it without one, and two first connects racing to make it lose one's events);
    after that, jobs connect at once instead of queueing behind each other."""
    rooms = [JobRoom() for _ in range(3)]
    ctxs = []
    for room in rooms:
        ctx = Ctx()
        ctx.room = room
        ctx.connect = room.connect
        gate_connect(cast(JobContext, ctx))
        ctxs.append(ctx)
    joins = [asyncio.create_task(ctx.connect()) for ctx in ctxs]
    async with asyncio.timeout(5):
        for room in rooms:
            await room.started.wait()  # all three begun while none has finished
    assert FfiClient.instance is not None  # the private name this relies on is still there
    for room in rooms:
        room.release.set()
    await asyncio.gather(*joins)
    assert all(room.connected for room in rooms)


async def test_a_process_connects_a_few_rooms_at_a_time() -> None:
    from agent_worker.connect_gate import CONNECTS_AT_ONCE, connect_slot

    inside, most = 0, 0
    release, full = asyncio.Event(), asyncio.Event()

    async def one() -> None:
        nonlocal inside, most
        async with connect_slot():
            inside += 1
            most = max(most, inside)
            if inside == CONNECTS_AT_ONCE:
                full.set()
            await release.wait()
            inside -= 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(CONNECTS_AT_ONCE + 3):
            tg.create_task(one())
        await full.wait()
        await asyncio.sleep(0.2)  # the others poll for a slot meanwhile, and find none
        assert inside == CONNECTS_AT_ONCE
        release.set()
    assert most == CONNECTS_AT_ONCE and inside == 0
