"""The invariants, checked against the world's ground truth (LiveKit's participant lists and
dispatches, the KV's records, what the network told each caller) — never against the
controller's own bookkeeping.

After every step (every loop iteration):
1. ``double_agent``: no room holds two agents for longer than ``REMOVAL_BOUND_S``, counted from the
   latest of: the second agent's arrival, the end of the last time nothing could be removed (a
   LiveKit or KV outage, no replica up), the last LiveKit or KV call about the room that failed for
   its caller. A controller that keeps trying is not blamed while the world keeps failing it (the
   end check still is); one that gave up is, a bound after its last failure. LiveKit holds one
   room per name at a time, so this is one agent per room incarnation (sid).
1b. ``agent_in_ghost_room``: no agent stays in a ghost room (one that exists only because
   CreateDispatch made it, no user in it) for longer than the same bound, counted the same way.
3. ``unexpected_exception``: a handler or a sweep raised (or logged with a traceback) something the
   consumer does not count as transient (``orchestrator.consumer.is_transient``: a KV timeout, a
   lost compare-and-set, a non-permanent LiveKit error...); in production that dead-letters the
   message after its redeliveries, or is a bug in a loop.
4. ``blind_redispatch``: CreateDispatch is not idempotent, so a second CreateDispatch for an attempt
   key must be preceded by a look (``find_dispatch``) started after the previous CreateDispatch of
   that key ended (answered, failed or abandoned). Flagged only when it does double up: a dispatch
   of that key is live in LiveKit when the blind one is sent.
5. ``resurrected``: a record of one incarnation (same sid) never leaves a terminal state — unless
   it was ``ended`` while LiveKit still lists that very room (a stale end, repaired).
6. ``failed_for_livekit``: no record is written ``failed`` for LiveKit being unreachable
   (``livekit_unreachable``, or a transient call failure as the reason): every outage the sim
   draws ends well within ``livekit_wait_deadline_s``.

At the end, once every fault is healed, every timer has fired and the resync has had its passes
(2.), per room name, against LiveKit's room list:
- a user's room LiveKit lists that matches the rule has a record *of its incarnation* (its sid, or
  for events without a sid its creation time), whatever became of its events (``lost``: no record;
  ``unserved_room``: only a record of another incarnation), which is ``speaking`` with exactly its
  one agent (``speaking_without_agent``, ``double_agent``, ``wrong_agent``, ``stuck`` otherwise) or
  terminal with a reason and no agent of ours (``terminal_without_reason``,
  ``agent_in_terminal_room``), and not ended while its room is still there (``ended_while_listed``);
- a ghost room LiveKit lists has no agent (``agent_in_ghost_room``) and no live record serving it
  (``ghost_served``);
- a room LiveKit no longer lists has no live record (``ended_room_not_terminal``: a record holding
  a pool for a room that is gone).
And the replicas' division of the rooms (``_ownership_problems``): every live replica sees the live
replicas as the members (``membership_diverged``), no index holds a room its replica does not track
(``index_not_dropped``), every record is tracked by exactly one live replica (``untracked_room``)
whose index holds it at its KV revision when the index keeps it (``index_behind``).
"""

from __future__ import annotations

import traceback
from collections import Counter
from typing import TYPE_CHECKING

from orchestrator.consumer import is_transient
from orchestrator.livekit_gateway import LiveKitCallError
from orchestrator.membership import member_id
from orchestrator.records import RoomRecord, RoomState
from tests.sim.config import LOBBY_PREFIX, REMOVAL_BOUND_S

if TYPE_CHECKING:
    from tests.sim.world import World

EXPECTED = "what orchestrator.consumer.is_transient accepts"
# Failure reasons that mean "LiveKit's API could not be reached" (the waiting deadline's, and the
# transient call failures'): no room may fail with one in the sim (invariant 6).
LIVEKIT_UNREACHABLE = frozenset({"livekit_unreachable", "unreachable", "timeout", "unavailable"})


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
        self.ghosted: dict[str, float] = {}  # ghost room -> since when an agent is in it
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
        if (self.doubled or self.ghosted) and not self.impaired:
            self._overdue(self.doubled, "double_agent", "has held {agents}")
            self._overdue(self.ghosted, "agent_in_ghost_room", "(a ghost room: no user) has held {agents}")
            if self.violation is not None:
                raise self.violation

    def _overdue(self, episodes: dict[str, float], kind: str, what: str) -> None:
        now = self.world.loop.time()
        for room, since in list(episodes.items()):
            start = max(since, self.clear_since, self.call_failed.get(room, since))
            if now - start > REMOVAL_BOUND_S:
                lk_room = self.world.livekit.rooms.get(room)
                agents = ", ".join(lk_room.agents()) if lk_room is not None else ""
                sid = lk_room.sid if lk_room is not None else "?"
                self.fail(
                    kind,
                    f"{room} ({sid}) {what.format(agents=agents)} since t={since:.3f} "
                    f"(over REMOVAL_BOUND_S={REMOVAL_BOUND_S:g}s)",
                    room,
                )
                episodes[room] = float("inf")  # once per episode

    # -- invariants 1 and 1b -------------------------------------------------------------------------

    def on_participants(self, room: str, agents: int) -> None:
        if agents > 1:
            self.doubled.setdefault(room, self.world.loop.time())
        else:
            self.doubled.pop(room, None)
        lk_room = self.world.livekit.rooms.get(room)
        if agents and lk_room is not None and lk_room.ghost:
            self.ghosted.setdefault(room, self.world.loop.time())
        else:
            self.ghosted.pop(room, None)

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

    def loop_ended(self, actor: str, loop: str, exc: BaseException | None) -> None:
        """One of a replica's service loops (its partition watches, its resync) ended on its own:
        in production that takes the replica down."""
        if exc is not None:
            for kind in (_describe(leaf) for leaf in leaves(exc)):
                self.exceptions[f"{loop}: {kind}"] += 1
            where = "".join(traceback.format_exception(exc)[-4:]).rstrip()
            self.fail("unexpected_exception", f"{actor}'s {loop} loop died of {_describe(exc)}:\n{where}")
        else:
            self.fail("unexpected_exception", f"{actor}'s {loop} loop returned")

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
        # One incarnation: the same sid; for events without one, the same creation time (a record
        # of a sid-less room that ended may well be followed by the next room of that name).
        same = (
            old is not None and new.sid == old.sid and (new.sid is not None or new.event_at == old.event_at)
        )
        if old is not None and old.terminal and not new.terminal and same and not new.manual:
            # Served again while LiveKit still lists that very room (a stale end had ended it, the
            # resync saw the room alive): a repair, not a resurrection.
            lk_room = self.world.livekit.rooms.get(new.room)
            alive = lk_room is not None and not lk_room.ghost and new.sid in (lk_room.sid, None)
            if alive and old.state == RoomState.ENDED:
                self.world.log(
                    "CHECK", f"{new.room}: ended record of a room LiveKit still lists served again"
                )
            else:
                self.fail(
                    "resurrected",
                    f"{new.room} went {old.state.value} -> {new.state.value} (same sid {new.sid or '-'})",
                    new.room,
                )
        # -- invariant 6
        fails = new.state == RoomState.FAILED and (old is None or old.state != RoomState.FAILED)
        if fails and new.reason in LIVEKIT_UNREACHABLE:
            self.fail(
                "failed_for_livekit",
                f"{new.room} failed ({new.reason}) though every LiveKit outage ends well within "
                f"livekit_wait_deadline_s: {new.history[-1].detail if new.history else ''}",
                new.room,
            )

    # -- invariant 2 (at the end) ----------------------------------------------------------------

    def final_problems(self) -> list[tuple[str, str, str]]:
        """(kind, room, detail) for every room name not where it should be once all is healed."""
        world = self.world
        problems: list[tuple[str, str, str]] = []
        for name in world.names:
            rec = world.kv.peek(name)
            lk_room = world.livekit.rooms.get(name)
            state = f"{rec.state.value} (sid {rec.sid or '-'})" if rec is not None else "no record"
            live = rec is not None and not rec.terminal
            if lk_room is None:
                if live:
                    problems.append(
                        ("ended_room_not_terminal", name, f"record {state}, LiveKit has no {name}")
                    )
                continue
            agents = lk_room.agents()
            if name.startswith(LOBBY_PREFIX):
                if agents:
                    problems.append(("agent_in_ignored_room", name, f"{agents}"))
                continue
            if lk_room.ghost:
                if agents:
                    problems.append(("agent_in_ghost_room", name, f"{agents} in ghost room {lk_room.sid}"))
                if live:
                    problems.append(("ghost_served", name, f"record {state} for ghost room {lk_room.sid}"))
                continue
            if rec is None:
                dead = any(getattr(e.msg, "room", None) == name for e in world.delivery.dead)
                problems.append(("lost", name, "RoomCreated dead-lettered" if dead else "no record"))
                continue
            if not self._same_incarnation(rec, lk_room.sid):
                problems.append(
                    ("unserved_room", name, f"LiveKit lists {name} as {lk_room.sid}; the record is {state}")
                )
                continue
            if rec.terminal:
                if not rec.reason:
                    problems.append(("terminal_without_reason", name, state))
                if agents:
                    problems.append(("agent_in_terminal_room", name, f"record {state}, agents {agents}"))
                if rec.state == RoomState.ENDED:
                    problems.append(
                        (
                            "ended_while_listed",
                            name,
                            f"record {state} ({rec.reason}), LiveKit lists {lk_room.sid}",
                        )
                    )
            elif rec.state == RoomState.SPEAKING:
                if len(agents) > 1:
                    problems.append(
                        ("double_agent", name, f"record speaking ({rec.identity}), agents {agents}")
                    )
                elif not agents:
                    problems.append(("speaking_without_agent", name, f"record says {rec.identity}"))
                elif rec.identity not in agents:
                    problems.append(
                        ("wrong_agent", name, f"record says {rec.identity}, LiveKit has {agents}")
                    )
            else:
                problems.append(("stuck", name, f"record {state}, agents {agents}"))
        problems.extend(self._ownership_problems())
        for name, want in world.scenario.expect.items():
            rec = world.kv.peek(name)
            got = f"{rec.state.value}/{rec.reason}" if rec is not None else "no record"
            if got not in want.split("|"):  # "a|b": either outcome
                problems.append(
                    ("unexpected_outcome", name, f"the scenario expects {want}, the record is {got}")
                )
        return problems

    def _ownership_problems(self) -> list[tuple[str, str, str]]:
        """Once healed and quiet: every live replica sees the same members, the live replicas
        (``membership_diverged``); so every partition has exactly one tracker, whose index holds
        each of its records the index keeps at the KV's revision (``untracked_room``,
        ``index_behind``), and no index holds a room of a partition its replica does not track
        (``index_not_dropped``)."""
        world = self.world
        live = [r for r in world.replicas if r.alive]
        members = frozenset(member_id(r.name) for r in live)
        problems: list[tuple[str, str, str]] = []
        for replica in live:
            seen = replica.ownership.members
            if seen != members:
                problems.append(
                    (
                        "membership_diverged",
                        replica.name,
                        f"{replica.name} sees members {sorted(seen)}; the live ones are {sorted(members)}",
                    )
                )
            for entry in replica.index.live():
                if not replica.ownership.tracks(entry.room):
                    problems.append(
                        (
                            "index_not_dropped",
                            entry.room,
                            f"{replica.name}'s index holds {entry.room} (partition "
                            f"{world.kv.partition(entry.room)}), a partition it does not track",
                        )
                    )
        if problems:
            return problems
        for room in world.kv.rooms():
            rec = world.kv.peek(room)
            revision = world.kv.revision(room)
            trackers = [r for r in live if r.ownership.tracks(room)]
            if len(trackers) != 1:
                problems.append(
                    (
                        "untracked_room",
                        room,
                        f"partition {world.kv.partition(room)} of {room} is tracked by "
                        f"{[r.name for r in trackers] or 'no live replica'}",
                    )
                )
                continue
            kept = rec is not None and (not rec.terminal or rec.removal_pending)
            held = trackers[0].index.revision(room)
            if held != (revision if kept else None):
                problems.append(
                    (
                        "index_behind",
                        room,
                        f"{trackers[0].name}'s index holds {room} at revision {held}; KV has "
                        f"revision {revision} ({rec.state.value if rec else '-'})",
                    )
                )
        return problems

    def _same_incarnation(self, rec: RoomRecord, sid: str) -> bool:
        """Whether ``rec`` is the record of LiveKit's room ``sid``: by sid, or (a record of events
        without a sid that has not learnt one) by the creation time its event carried."""
        if rec.sid is not None:
            return rec.sid == sid
        script = self.world.scripts.get(sid)
        lk_room = self.world.livekit.rooms.get(rec.room)
        if script is None or lk_room is None or rec.event_at is None:
            return False
        return abs(rec.event_at - lk_room.created_at) < 1e-3
