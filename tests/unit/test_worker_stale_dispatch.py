"""A worker refuses a job whose dispatch was made for another room (sid) than the one LiveKit gave
it: CreateDispatch landed after its room was deleted and LiveKit made the room again for it. The
room made that way is deleted when no caller is in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest
from livekit.agents import JobContext
from livekit.api import ParticipantInfo

from agent_worker.connect_gate import DispatchWithdrawn
from agent_worker.job import dispatch_listed


@dataclass
class RoomApi:
    participants: list[ParticipantInfo] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    sid: str = "RM_new"

    async def list_participants(self, req: Any) -> Any:
        return SimpleNamespace(participants=self.participants)

    async def delete_room(self, req: Any) -> None:
        self.deleted.append(req.room)

    async def list_rooms(self, req: Any) -> Any:
        return SimpleNamespace(rooms=[SimpleNamespace(name="room-a", sid=self.sid)])


class DispatchApi:
    async def list_dispatch(self, room_name: str) -> list[Any]:
        return [SimpleNamespace(id="AD_1")]


def job_ctx(room_api: RoomApi, sid: str = "RM_new") -> JobContext:
    ctx = SimpleNamespace(
        job=SimpleNamespace(room=SimpleNamespace(name="room-a", sid=sid), dispatch_id="AD_1"),
        api=SimpleNamespace(room=room_api, agent_dispatch=DispatchApi()),
    )
    return cast(JobContext, ctx)


def participant(identity: str, kind: int) -> ParticipantInfo:
    return ParticipantInfo(identity=identity, kind=kind)  # type: ignore[arg-type]


async def test_a_job_in_a_room_made_for_a_stale_dispatch_is_refused_and_the_empty_room_deleted() -> None:
    api = RoomApi(participants=[participant("agent-x", ParticipantInfo.Kind.AGENT)])
    with pytest.raises(DispatchWithdrawn, match=r"RM_old.*deleted again"):
        await dispatch_listed(job_ctx(api), "RM_old")
    assert api.deleted == ["room-a"]


async def test_a_room_a_caller_joined_meanwhile_is_not_deleted() -> None:
    api = RoomApi(participants=[participant("alice", ParticipantInfo.Kind.STANDARD)])
    with pytest.raises(DispatchWithdrawn, match="RM_old"):
        await dispatch_listed(job_ctx(api), "RM_old")
    assert api.deleted == []


@pytest.mark.parametrize("intended", ["RM_new", None])
async def test_a_dispatch_for_this_room_or_without_a_sid_goes_on_to_join(intended: str | None) -> None:
    api = RoomApi()
    assert await dispatch_listed(job_ctx(api), intended)
    assert api.deleted == []
