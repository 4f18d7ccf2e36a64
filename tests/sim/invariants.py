"""The invariants, checked against the world's ground truth (LiveKit's participant lists and
dispatches, the KV's records, what the network told each caller) — never against the
controller's own bookkeeping.

After every step (every loop iteration):
1. ``double_agent``: no room holds two agents for longer than ``REMOVAL_BOUND_S``, counted from the
   latest of: the second agent's arrival, the end of the last time nothing could be removed (a
   LiveKit or KV outage, no replica up), the last LiveKit or KV call about the room that failed for
   its caller. A controller that keeps trying is not blamed while the world keeps failing it (the
   end check still is); one that gave up is, a bound after its last failure.
3. ``unexpected_exception``: a handler or a sweep raised (or logged with a traceback) something the
   consumer does not count as transient (``orchestrator.consumer.is_transient``: a KV timeout, a
   lost compare-and-set, a non-permanent LiveKit error...); in production that dead-letters the
   message after its redeliveries, or is a bug in a loop.
4. ``blind_redispatch``: CreateDispatch is not idempotent, so a second CreateDispatch for an attempt
   key must be preceded by a look (``find_dispatch``) started after the previous CreateDispatch of
   that key ended (answered, failed or abandoned). Flagged only when it does double up: a dispatch
   of that key is live in LiveKit when the blind one is sent.
5. ``resurrected``: a record of one incarnation (same sid) never leaves a terminal state.

At the end, once every fault is healed and every timer has fired:
2. every room whose RoomCreated was published is either speaking with exactly its one agent in
   LiveKit, or terminal with a reason and no agent of ours in it; a room that ended in LiveKit is
   terminal (or has no record) and has no agent (none put back into a room CreateDispatch re-made).
"""

from __future__ import annotations

import traceback
from collections import Counter
from typing import TYPE_CHECKING

from orchestrator.consumer import is_transient
from orchestrator.livekit_gateway import LiveKitCallError
from orchestrator.records import RoomRecord, RoomState
from tests.sim.config import REMOVAL_BOUND_S

if TYPE_CHECKING:
    from tests.sim.world import World

EXPECTED = "what orchestrator.consumer.is_transient accepts"


class Violation(Exception):
    def __init__(self, kind: str, detail: str, rooms: tuple[str, ...] = ()) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.rooms = rooms


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def expected(exc: BaseException) -> bool:
    return is_transient(exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, LiveKitCallError):
        return f"LiveKitCallError({exc.reason})"
    return type(exc).__name__


class Checks:
    def __init__(self, world: World, allow: frozenset[str] = frozenset()) -> None:
        self.world = world
        self.allow = allow  # kinds only counted, not failing the run (to look past a known bug)
        self.violation: Violation | None = None
        self.tolerated: Counter[str] = Counter()
        self.exceptions: Counter[str] = Counter()  # "<activity kind>: <type>" -> count
        self.doubled: dict[str, float] = {}  # room -> since when it holds two agents or more
        self.impaired = True  # no replica is up before the first warm-up ends
        self.clear_since = 0.0  # when the last impairment ended
        self.create_ended: dict[str, float] = {}
        self.look_started: dict[str, float] = {}
        self.call_failed: dict[str, float] = {}  # room -> last LiveKit/KV call about it that failed

    def fail(self, kind: str, detail: str, *rooms: str) -> None:
        self.world.log("CHECK", f"VIOLATION {kind}: {detail}")
        if kind in self.allow:
            self.tolerated[kind] += 1
            return
        if self.violation is None:
            self.violation = Violation(kind, detail, rooms)

    # -- after every step ------------------------------------------------------------------------

    def after_step(self) -> None:
        if self.violation is not None:
            raise self.violation
        if self.doubled and not self.impaired:
            now = self.world.loop.time()
            for room, since in list(self.doubled.items()):
                start = max(since, self.clear_since, self.call_failed.get(room, since))
                if now - start > REMOVAL_BOUND_S:
                    agents = ", ".join(self.world.livekit.agents_in(room))
                    self.fail(
                        "double_agent",
                        f"{room} has held {agents} since t={since:.3f} "
                        f"(over REMOVAL_BOUND_S={REMOVAL_BOUND_S:g}s)",
                        room,
                    )
                    self.doubled[room] = float("inf")  # once per episode
            if self.violation is not None:
                raise self.violation

    # -- invariant 1 ---------------------------------------------------------------------------------

    def on_participants(self, room: str, agents: int) -> None:
        if agents > 1:
            self.doubled.setdefault(room, self.world.loop.time())
        else:
            self.doubled.pop(room, None)

    def on_call_failed(self, room: str) -> None:
        self.call_failed[room] = self.world.loop.time()

    def impairment_changed(self) -> None:
        faults = self.world.faults
        impaired = faults.kv_down or faults.lk_down or not self.world.ready_replicas()
        if self.impaired and not impaired:
            self.clear_since = self.world.loop.time()
        self.impaired = impaired

    # -- invariant 3 ---------------------------------------------------------------------------------

    def on_exception(self, actor: str, activity: str, exc: BaseException, room: str = "") -> None:
        what = activity.split(" ", 1)[0]
        kinds = [_describe(leaf) for leaf in leaves(exc)]
        for kind in kinds:
            self.exceptions[f"{what}: {kind}"] += 1
        wrapped = f"{type(exc).__name__}[{', '.join(kinds)}]" if isinstance(exc, BaseExceptionGroup) else ""
        self.world.log(actor, f"{activity} raised {wrapped or kinds[0]}: {exc}")
        bad = [leaf for leaf in leaves(exc) if not expected(leaf)]
        if bad:
            where = "".join(traceback.format_exception(bad[0])[-4:]).rstrip()
            if not room and activity.startswith(("Room", "AgentStatus")):
                room = activity.split(" ")[1]
            self.fail(
                "unexpected_exception",
                f"{activity} on {actor} raised {_describe(bad[0])} (expected only {EXPECTED}):\n{where}",
                room,
            )

    # -- invariant 4 ---------------------------------------------------------------------------------

    def on_create_sent(self, room: str, key: str | None) -> None:
        if key is None:
            return
        ended = self.create_ended.get(key)
        if ended is None or self.look_started.get(key, -1.0) >= ended:
            return
        live = self.world.livekit.live_dispatch_with_key(room, key)
        if live is not None:
            self.fail(
                "blind_redispatch",
                f"CreateDispatch for key {key} while its dispatch {live.id} is live in LiveKit, with no "
                f"look since the previous CreateDispatch of that key ended at t={ended:.3f}",
                room,
            )

    def on_create_done(self, key: str | None) -> None:
        if key is not None:
            self.create_ended[key] = self.world.loop.time()

    def on_look(self, key: str) -> None:
        self.look_started[key] = self.world.loop.time()

    # -- invariant 5 ---------------------------------------------------------------------------------

    def on_commit(self, old: RoomRecord | None, new: RoomRecord) -> None:
        if old is not None and old.terminal and not new.terminal and new.sid == old.sid and not new.manual:
            self.fail(
                "resurrected", f"{new.room} went {old.state.value} -> {new.state.value} (same sid)", new.room
            )

    # -- invariant 2 (at the end) ----------------------------------------------------------------

    def final_problems(self) -> list[tuple[str, str, str]]:
        """(kind, room, detail) for every room not where it should be once all is healed."""
        world = self.world
        problems: list[tuple[str, str, str]] = []
        for room in world.published_rooms:
            rec = world.kv.peek(room)
            agents = world.livekit.agents_in(room)
            state = rec.state.value if rec is not None else "no record"
            if room in world.livekit.ended:
                if rec is not None and not rec.terminal:
                    problems.append(("ended_room_not_terminal", room, f"record {state}, agents {agents}"))
                elif agents:
                    problems.append(
                        ("agent_in_ended_room", room, f"{agents} in a room CreateDispatch re-made")
                    )
                continue
            if rec is None:
                dead = any(getattr(e.msg, "room", None) == room for e in world.delivery.dead)
                problems.append(("lost", room, "RoomCreated dead-lettered" if dead else "no record"))
            elif rec.terminal:
                if not rec.reason:
                    problems.append(("terminal_without_reason", room, state))
                if agents:
                    problems.append(("agent_in_terminal_room", room, f"record {state}, agents {agents}"))
            elif rec.state == RoomState.SPEAKING:
                if len(agents) > 1:
                    problems.append(
                        ("double_agent", room, f"record speaking ({rec.identity}), agents {agents}")
                    )
                elif not agents:
                    problems.append(("speaking_without_agent", room, f"record says {rec.identity}"))
                elif rec.identity not in agents:
                    problems.append(
                        ("wrong_agent", room, f"record says {rec.identity}, LiveKit has {agents}")
                    )
            else:
                problems.append(("stuck", room, f"record {state}, agents {agents}"))
        return problems
