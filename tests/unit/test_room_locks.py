"""8. One task per room in a replica: a lock entry lives while anyone holds or awaits it, however
many rooms come and go (the old size-based pruning could drop a lock a woken waiter still needed)."""

from __future__ import annotations

import asyncio

from orchestrator.room.locks import RoomLocks


async def test_a_waiter_woken_after_many_other_rooms_still_shares_the_lock() -> None:
    locks = RoomLocks()
    inside: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("room-a"):
            inside.append("first")
            await release.wait()
            inside.append("first out")

    async def waiter() -> None:
        async with locks.hold("room-a"):
            inside.append("second")

    async with asyncio.TaskGroup() as tg:
        tg.create_task(holder())
        await asyncio.sleep(0)
        tg.create_task(waiter())
        await asyncio.sleep(0)
        # Twenty thousand other rooms taken and released meanwhile.
        for n in range(20_000):
            async with locks.hold(f"other-{n}"):
                pass
        assert locks.busy("room-a") and len(locks) == 1
        release.set()
    assert inside == ["first", "first out", "second"]
    assert len(locks) == 0 and not locks.busy("room-a")
