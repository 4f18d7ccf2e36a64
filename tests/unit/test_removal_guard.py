"""A worker's report can get only its own pool's agents removed (issue 17): never a caller, another
pool's agent, or the room's current agent, whatever identity a (forged or mistaken) report names."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import cast

from orchestrator.livekit_gateway import ListedDispatch
from orchestrator.records import Replaced, RoomRecord, RoomState
from orchestrator.room.decide.context import Context
from orchestrator.room.decide.reports import decide_report
from orchestrator.room.decide.retire import decide_removal_done, remove_step
from orchestrator.room.effects import removable
from orchestrator.room.facts import RemovalDone
from orchestrator.room.lease import Lease
from orchestrator.room.ports import RecordStore
from orchestrator.room.step import RemoveReplaced
from orchestrator.scheduler import Topology
from orchestrator.store import Versioned
from shared.config import SwitchboardConfig
from shared.messages import AgentStatus
from tests.roomkit import effects_on

AGENT = "ornina-avatar-agent"
HOME, OTHER = "eu-central-a", "us-east-a"
CONFIG = SwitchboardConfig.model_validate({"rules": [{"name": "all", "match": "*", "agent": AGENT}]})


class Room:
    """A LiveKit room with a roster: identity -> agent_name of an agent, None for anyone else."""

    def __init__(self, roster: dict[str, str | None], dispatches: list[ListedDispatch] | None = None) -> None:
        self.people = dict(roster)
        self.dispatches = dispatches or []
        self.removed: list[str] = []

    async def roster(self, room: str) -> dict[str, str | None] | None:
        return dict(self.people)

    async def room_dispatches(self, room: str) -> list[ListedDispatch] | None:
        return list(self.dispatches)

    async def participants(self, room: str) -> frozenset[str] | None:
        return frozenset(self.people)

    async def delete_dispatch(self, dispatch_id: str, room: str) -> None:
        self.dispatches = [d for d in self.dispatches if d.id != dispatch_id]

    async def remove_participant(self, room: str, identity: str) -> None:
        self.removed.append(identity)
        self.people.pop(identity, None)


def speaking_on(pool: str) -> RoomRecord:
    return RoomRecord(
        room="vip-1",
        state=RoomState.SPEAKING,
        agent=AGENT,
        home_region="eu-central",
        attempt=2,
        pool=pool,
        agent_name=f"{AGENT}.{pool}",
        dispatch_id="AD_NOW",
        identity="agent-NOW",
    )


def report(identity: str, pool: str = HOME, dispatch_id: str = "AD_OLD") -> AgentStatus:
    return AgentStatus(
        room="vip-1",
        dispatch_id=dispatch_id,
        attempt=1,
        pool=pool,
        worker="w1",
        state="joined",
        at=datetime.now(UTC),
        identity=identity,
    )


def ctx() -> Context:
    return Context(
        now=time.time(), replica="r1", config=CONFIG, topology=Topology.from_config(CONFIG), lease_s=15.0
    )


async def remove_after(rec: RoomRecord, st: AgentStatus, room: Room) -> RemovalDone:
    reported = decide_report(rec, st, ctx()).record
    assert reported is not None
    effect = remove_step(reported).effect  # what the reconciler runs next for the record
    assert isinstance(effect, RemoveReplaced)
    lease = Lease(Versioned(reported, 1), cast(RecordStore, None), time.time, 300.0, lambda v: v)
    outcome = await effects_on(room).run(effect, reported, lease)
    assert isinstance(outcome, RemovalDone)
    return outcome


def test_only_agents_of_the_dispatchs_pools_are_removable() -> None:
    assert removable(f"{AGENT}.{HOME}", frozenset({HOME}))
    assert not removable(f"{AGENT}.{OTHER}", frozenset({HOME}))
    assert not removable(None, frozenset({HOME}))  # a caller
    assert not removable(None, frozenset())
    assert removable("", frozenset())  # a record from before agent names were kept: any agent
    assert not removable("", frozenset({HOME}))  # an unnamed agent, on a report's word alone
    assert removable("", frozenset({HOME}), job_of_dispatch=True)  # LiveKit lists it as the job's


async def test_a_stale_report_naming_a_caller_removes_nobody() -> None:
    room = Room({"agent-NOW": f"{AGENT}.{OTHER}", "alice": None})
    done = await remove_after(speaking_on(OTHER), report("alice"), room)
    assert room.removed == [] and "alice" in room.people
    assert done.refused == ("alice",)
    # explain says so
    after = decide_removal_done(speaking_on(OTHER), done, ctx())
    assert after.record is not None and "not removed: alice" in after.record.history[-1].detail


async def test_a_stale_report_naming_the_current_agent_does_not_evict_it() -> None:
    room = Room({"agent-NOW": f"{AGENT}.{HOME}", "alice": None})
    done = await remove_after(speaking_on(HOME), report("agent-NOW", pool=HOME), room)
    assert room.removed == [] and done.refused == ("agent-NOW",)


async def test_a_report_cannot_evict_another_pools_agent() -> None:
    room = Room({"agent-NOW": f"{AGENT}.{OTHER}", "agent-B": f"{AGENT}.{OTHER}", "alice": None})
    done = await remove_after(speaking_on(OTHER), report("agent-B", pool=HOME), room)
    assert room.removed == [] and done.refused == ("agent-B",)


async def test_the_replaced_agent_of_the_reporting_pool_is_removed() -> None:
    room = Room({"agent-NOW": f"{AGENT}.{OTHER}", "agent-OLD": f"{AGENT}.{HOME}", "alice": None})
    done = await remove_after(speaking_on(OTHER), report("agent-OLD", pool=HOME), room)
    assert room.removed == ["agent-OLD"] and done.refused == ()
    assert done.entries[0].identities == ["agent-OLD"]


async def test_an_agent_livekit_lists_under_the_replaced_dispatch_is_removed() -> None:
    old = ListedDispatch("AD_OLD", f"{AGENT}.{HOME}", "vip-1/1", None, frozenset({"agent-OLD"}))
    room = Room({"agent-NOW": f"{AGENT}.{OTHER}", "agent-OLD": f"{AGENT}.{HOME}"}, [old])
    rec = speaking_on(OTHER).model_copy(
        update={"replaced": [Replaced(dispatch_id="AD_OLD", agent_name=f"{AGENT}.{HOME}", attempt=1)]}
    )
    done = await remove_after(rec, report("agent-OLD"), room)
    assert room.removed == ["agent-OLD"] and room.dispatches == []
    assert done.refused == ()


def test_a_report_on_the_current_dispatch_from_another_pool_changes_nothing() -> None:
    rec = speaking_on(OTHER)
    for state in ("error", "left", "voice"):
        forged = report("agent-NOW", pool=HOME, dispatch_id="AD_NOW").model_copy(update={"state": state})
        step = decide_report(rec, forged, ctx())
        assert step.record is None and step.effect is None, state
