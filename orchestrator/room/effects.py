"""The effects executor: the only place a room step talks to LiveKit.

Each effect comes back as an outcome fact (:mod:`orchestrator.room.facts`), never as an exception
for a LiveKit failure: the next decision says what a failure means. CreateDispatch is retried here
under one budget; the retry loop uses the injected clock and random source, so the simulator
replays it exactly (a library's loop reads the real clock).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.alongside import alongside
from orchestrator.livekit_gateway import ListedDispatch, LiveKitCallError
from orchestrator.records import Replaced, RoomRecord
from orchestrator.room.facts import (
    ROOM_NODE_SILENT,
    DispatchFailed,
    DispatchLanded,
    GhostFound,
    JobsSeen,
    JobsUnknown,
    Outcome,
    RemovalDone,
    RemovalFailed,
    RoomGone,
)
from orchestrator.room.lease import Lease
from orchestrator.room.observe import Observer, call_failed, call_span
from orchestrator.room.ports import LiveKit
from orchestrator.room.step import CheckJobs, Effect, EnsureDispatch, RemoveReplaced
from shared.dispatch_metadata import build_dispatch_metadata
from shared.messages import DispatchInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """CreateDispatch tries within one round: exponential backoff with jitter under a deadline."""

    deadline_s: float
    wait_initial_s: float = 0.1
    wait_max_s: float = 1.0
    jitter: float = 0.2

    def wait(self, tries: int, rng: random.Random) -> float:
        return float(
            min(self.wait_max_s, self.wait_initial_s * 2 ** (tries - 1)) * (1 + self.jitter * rng.random())
        )


@dataclass(frozen=True)
class Listed:
    """LiveKit lists another room (``sid``) under the name than the one an event is about."""

    sid: str


class Effects:
    def __init__(
        self,
        livekit: LiveKit,
        *,
        mono: Callable[[], float],
        rng: random.Random,
        retry: RetryPolicy,
        region_of: Callable[[str], str | None],
        observer: Observer,
        state_region: str | None = None,
    ) -> None:
        self.livekit = livekit
        self.mono = mono
        self.rng = rng
        self.retry = retry
        self.region_of = region_of
        self.observer = observer
        # With per-region state, the region whose streams hold these rooms: the dispatch tells its
        # worker, whichever region that is in, to report there.
        self.state_region = state_region

    async def run(self, effect: Effect, rec: RoomRecord, lease: Lease) -> Outcome:
        match effect:
            case EnsureDispatch():
                async with alongside(lease.keep(), "lease_renewal"):
                    return await self._ensure_dispatch(effect, lease)
            case RemoveReplaced(entries):
                return await self._remove(rec, entries)
            case CheckJobs(dispatch_id):
                try:
                    jobs = await self.livekit.dispatch_jobs(rec.room, dispatch_id)
                except LiveKitCallError as err:
                    return JobsUnknown(dispatch_id, str(err))
                return JobsSeen(dispatch_id, jobs.count if jobs is not None else None)
        raise AssertionError(f"unknown effect {effect!r}")

    async def _ensure_dispatch(self, effect: EnsureDispatch, lease: Lease) -> Outcome:
        started = self.mono()
        tries = 0
        look = effect.look_first
        # The sid the first try saw, for a record known without one: a later try finding another
        # room under the name finds a newer room, maybe one an earlier try of ours created.
        seen: str | None = None
        while True:
            rec = lease.current.record
            # No new try once the claim is in doubt: whoever takes the step over after the lease
            # should find no try of ours still starting.
            if lease.in_doubt():
                return DispatchFailed(effect.key, "claim_lost", "the claim on the step lapsed", False, tries)
            tries += 1
            began = self.mono()
            with call_span("CreateDispatch", rec, tries) as span:
                try:
                    # CreateDispatch creates a room it does not find: ask first whether the
                    # record's room (this very incarnation) is there.
                    room = await self.livekit.room_info(rec.room)
                    expected = rec.sid or seen
                    if room is None or (expected and room.sid and room.sid != expected):
                        span.add_event("room not in LiveKit")
                        # A newer room holding this attempt's dispatch was made by it: the evidence
                        # that it is our ghost (an ambiguous try alone is not).
                        ours = room is not None and look and await self._find(rec, effect.key) is not None
                        return RoomGone(effect.key, room.sid if room else None, after_ambiguous=ours)
                    seen = seen or room.sid
                    if look:
                        existing = await self._find(rec, effect.key)
                        if existing is not None:
                            span.set_attribute("switchboard.dispatch_id", existing)
                            span.add_event("found dispatch from an earlier ambiguous try")
                            return DispatchLanded(effect.key, existing, tries, found=True, room_sid=room.sid)
                    # Built inside this try's span: the worker's job span becomes its child.
                    dispatch_id = await self.livekit.create_dispatch(
                        rec.room, rec.agent_name or "", self._metadata(rec, room.sid)
                    )
                    span.set_attribute("switchboard.dispatch_id", dispatch_id)
                    self.observer.call(self.mono() - began, "ok", retry=tries > 1)
                except LiveKitCallError as err:
                    self.observer.call(self.mono() - began, "error", err.reason, retry=tries > 1)
                    call_failed(span, err.reason, str(err))
                    log.warning("CreateDispatch try %d failed: %s", tries, err, extra={"reason": err.reason})
                    look = look or err.ambiguous
                    if err.permanent:
                        return DispatchFailed(effect.key, err.reason, str(err), True, tries)
                    delay = self.retry.wait(tries, self.rng)
                    if self.mono() - started + delay > self.retry.deadline_s:
                        return DispatchFailed(effect.key, err.reason, str(err), False, tries)
                else:
                    return DispatchLanded(effect.key, dispatch_id, tries, found=False, room_sid=room.sid)
            await asyncio.sleep(delay)

    async def _find(self, rec: RoomRecord, key: str) -> str | None:
        return await self.livekit.find_dispatch(rec.room, rec.agent_name or "", key)

    def _metadata(self, rec: RoomRecord, listed_sid: str | None) -> str:
        """Our part of the dispatch's metadata; ``sid``, the room it is for, tells its worker not to
        join a room LiveKit made for it after that one was deleted."""
        assert rec.pool and rec.agent and rec.dispatch_key and rec.home_region
        info = DispatchInfo(
            room=rec.room,
            attempt=rec.attempt,
            pool=rec.pool,
            region=self.region_of(rec.pool) or rec.home_region,
            agent=rec.agent,
            key=rec.dispatch_key,
            sid=rec.sid or listed_sid,
            state_region=self.state_region,
        )
        return build_dispatch_metadata(rec.user_metadata, info)

    async def _remove(self, rec: RoomRecord, entries: tuple[Replaced, ...]) -> Outcome:
        """Delete each replaced dispatch (every one LiveKit lists under its id or its attempt key:
        an ambiguous try and its retry can both have landed), evict its agents, then confirm with
        the participant list. The room's existence is asked first: for a room LiveKit already
        deleted, DeleteDispatch answers only after seconds, and there is nobody left to remove.

        Only agents of the replaced dispatch's own pool are removed (:func:`removable`): an
        identity comes from a worker's report, and a report must never evict a caller, another
        pool's agent or the room's current agent. Anyone else it names is refused, and said so.

        A replaced dispatch of another room of the name found here, with no caller in the room, is
        reported (:class:`GhostFound`) before anything is deleted, unless the record knows it."""
        room = rec.room
        refused: list[str] = []
        roster: dict[str, str | None] | None = None
        try:
            roster = await self.livekit.roster(room)
            listed = await self.livekit.room_dispatches(room) if roster is not None else None
            if roster is None or listed is None:
                return RemovalDone(room_exists=False, entries=entries)
            present = frozenset(roster)
            ours = {i for e in entries for i in e.identities}
            current = _current_identities(rec, listed)
            found: list[Replaced] = []
            for entry in entries:
                mine = [d for d in listed if _of(entry, d)]
                identities = set(entry.identities).union(*(d.identities for d in mine))
                if mine and not present - ours - identities:
                    ghost = await self._ghost(rec, entry, mine)
                    if ghost is not None:
                        return ghost
                for d in mine:
                    await self.livekit.delete_dispatch(d.id, room)
                pools = _pools_of(entry.agent_name, *(d.agent_name for d in mine))
                listed_jobs = frozenset().union(*(d.identities for d in mine))  # LiveKit's own word
                wrong = {
                    i
                    for i in identities & present
                    if i in current or not removable(roster[i], pools, i in listed_jobs)
                }
                for identity in sorted((identities & present) - wrong):
                    await self.livekit.remove_participant(room, identity)
                refused += sorted(wrong)
                dispatch_id = entry.dispatch_id or (mine[0].id if mine else None)
                found.append(
                    entry.model_copy(
                        update={"dispatch_id": dispatch_id, "identities": sorted(identities - wrong)}
                    )
                )
            after = await self.livekit.participants(room)
        except LiveKitCallError as err:
            log.warning(
                "removal of replaced agents in %s failed: %s", room, err, extra={"reason": err.reason}
            )
            if err.reason == "unavailable" and roster is not None:
                return RemovalFailed(ROOM_NODE_SILENT, str(err))
            return RemovalFailed(err.reason, str(err))
        if refused:
            log.warning(
                "room %s: refused to remove %s, named by a report of a replaced dispatch: not an agent "
                "of that dispatch's pool, or the room's current agent",
                room,
                ", ".join(refused),
                extra={"reason": "removal_refused"},
            )
        if after is None:
            return RemovalDone(room_exists=False, entries=tuple(found), refused=tuple(refused))
        still = {i for e in found for i in e.identities} & after
        if still:
            return RemovalFailed(
                "still_present", f"still in the room after removal: {', '.join(sorted(still))}"
            )
        return RemovalDone(room_exists=True, entries=tuple(found), refused=tuple(refused))

    async def ghost_of(self, room: str, sid: str) -> GhostFound | Listed | None:
        """Asked before a newer room of a known name (``sid``) is served, on its event. Whether
        LiveKit lists another room under the name now (:class:`Listed`: the event is late, its room
        is gone, and the dispatches listed under the name are not evidence about it), or whether
        ``sid``'s room holds a dispatch of ours made for another room of the name, and no caller:
        our ghost, made by a try that LiveKit applied after the room it was for had been deleted
        (a timed-out try can land seconds later, after the record has forgotten its attempt). A
        failed look counts as no evidence: the room is served, as it was before this look existed."""
        try:
            info = await self.livekit.room_info(room)
            if info is not None and info.sid and info.sid != sid:
                return Listed(info.sid)
            listed = await self.livekit.room_dispatches(room)
            stale = next((d for d in listed or () if d.key and d.sid and d.sid != sid), None)
            if stale is None:
                return None
            callers = await self.livekit.callers(room)
        except LiveKitCallError as err:
            log.warning("ghost check of %s failed: %s", room, err, extra={"reason": err.reason})
            return None
        if callers is None or callers:
            return None
        entry = Replaced(
            dispatch_id=stale.id,
            key=stale.key,
            agent_name=stale.agent_name,
            sid=stale.sid,
            identities=sorted(stale.identities),
        )
        return GhostFound(entry, sid)

    async def _ghost(self, rec: RoomRecord, entry: Replaced, mine: list[ListedDispatch]) -> GhostFound | None:
        """``entry``'s dispatches are listed in a room holding no caller: whether that room is
        another one than a dispatch was for, and the record does not know it yet. (Asked only
        then: a room being served again has its caller in it.)"""
        intended = {d.sid or entry.sid for d in mine} - {None}
        if not intended:
            return None
        info = await self.livekit.room_info(rec.room)
        if info is None or info.sid is None or info.sid == rec.ghost_sid or intended == {info.sid}:
            return None
        stale = next(d for d in mine if (d.sid or entry.sid) not in (None, info.sid))
        return GhostFound(
            entry.model_copy(update={"dispatch_id": stale.id, "sid": stale.sid or entry.sid}), info.sid
        )


def removable(agent_name: str | None, pools: frozenset[str], job_of_dispatch: bool = False) -> bool:
    """Whether a participant may be removed as a replaced dispatch's agent: an agent (None: a caller,
    SIP, egress) that joined under the agent_name of one of ``pools``, the pools the dispatch was
    made for. Without any (a record from before agent names were kept) any agent may be; so may an
    agent without the attribute (another SDK) that LiveKit lists as the dispatch's job."""
    if agent_name is None:
        return False
    return not pools or _pool_of(agent_name) in pools or (agent_name == "" and job_of_dispatch)


def _pool_of(agent_name: str) -> str:
    """The pool of an ``<agent>.<pool>`` agent_name (pool ids hold no dot; shared.subjects)."""
    return agent_name.rsplit(".", 1)[-1]


def _pools_of(*agent_names: str | None) -> frozenset[str]:
    return frozenset(_pool_of(n) for n in agent_names if n)


def _current_identities(rec: RoomRecord, listed: list[ListedDispatch]) -> frozenset[str]:
    """The room's current agent (its report, and LiveKit's jobs of its dispatch): never a replaced one."""
    if rec.dispatch_id is None:
        return frozenset({rec.identity} if rec.identity else ())
    of_dispatch = (d.identities for d in listed if d.id == rec.dispatch_id)
    return frozenset({rec.identity} if rec.identity else ()).union(*of_dispatch)


def _of(entry: Replaced, d: ListedDispatch) -> bool:
    """Whether LiveKit's dispatch ``d`` is the replaced ``entry``'s: its id, or its attempt key."""
    if entry.dispatch_id is not None and d.id == entry.dispatch_id:
        return True
    return entry.key is not None and d.key == entry.key and d.agent_name == (entry.agent_name or d.agent_name)
