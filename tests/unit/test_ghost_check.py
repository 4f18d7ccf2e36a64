"""Effects.ghost_of: what a newer room's event is judged by before that room is served."""

from __future__ import annotations

from orchestrator.livekit_gateway import ListedDispatch, LiveRoom
from orchestrator.room.effects import Listed
from orchestrator.room.facts import GhostFound
from tests.roomkit import effects_on


class Rooms:
    """LiveKit as the ghost check sees it: the room listed under the name now (``sid``), the
    dispatches in it and who is there besides agents."""

    def __init__(self, sid: str | None, dispatches: list[ListedDispatch], callers: frozenset[str]) -> None:
        self.sid, self.dispatches, self._callers = sid, dispatches, callers
        self.asked: list[str] = []

    async def room_info(self, room: str) -> LiveRoom | None:
        self.asked.append("ListRooms")
        return LiveRoom(room, self.sid, None, "", 1) if self.sid else None

    async def room_dispatches(self, room: str) -> list[ListedDispatch] | None:
        self.asked.append("ListDispatch")
        return self.dispatches if self.sid else None

    async def callers(self, room: str) -> frozenset[str] | None:
        self.asked.append("ListParticipants")
        return self._callers if self.sid else None


OURS_FOR_RM_1 = ListedDispatch("AD_4", "agent.pool", "room-1/2", "RM_1", frozenset())


async def test_a_room_holding_our_dispatch_for_an_older_room_and_nobody_else_is_our_ghost() -> None:
    found = await effects_on(Rooms("RM_2", [OURS_FOR_RM_1], frozenset())).ghost_of("room-1", "RM_2")
    assert isinstance(found, GhostFound) and found.sid == "RM_2" and found.entry.dispatch_id == "AD_4"


async def test_a_caller_in_the_room_makes_it_a_room_to_serve() -> None:
    rooms = Rooms("RM_2", [OURS_FOR_RM_1], frozenset({"alice"}))
    assert await effects_on(rooms).ghost_of("room-1", "RM_2") is None


async def test_a_late_event_is_not_judged_by_the_dispatches_of_the_room_listed_now() -> None:
    """(simulator seed 1003469) The event is RM_2's, but LiveKit lists RM_3 under the name now:
    RM_3's dispatches say nothing about RM_2, which is gone; the event is not served."""
    rooms = Rooms("RM_3", [OURS_FOR_RM_1], frozenset())
    assert await effects_on(rooms).ghost_of("room-1", "RM_2") == Listed("RM_3")
    assert rooms.asked == ["ListRooms"]
