"""Double agents *during* a drill, sampled from LiveKit's own participant lists.

The end-of-run check (``Stack.settle_doubles``) only sees the rooms as they are at the end; a room
that had two agents for a while in the middle of a run and then lost one passes it. The sampler
below runs for the whole run (started by ``Stack.start``, stopped by ``Stack.finish`` or
``Stack.stop``) and, every :data:`SAMPLE_INTERVAL_S`, lists the participants of LiveKit's live rooms
and records every room it sees with more than one agent (``ParticipantInfo.Kind.AGENT``), with when
the double began, when it was first and last seen and when it was seen cleared.

How long a double lasted (:attr:`Double.lasted_s`) runs from when the later of its agents joined
(LiveKit's own ``joined_at_ms``, so it does not depend on when the sampler happened to look) to the
first listing of the room with at most one agent again (or the last sighting, when the run ended
first): an upper bound, at most one sample interval (plus one call) longer than the real overlap.

Cost is bounded per sample: one ``ListRooms`` (every room with LiveKit's ``num_participants``) and
at most :data:`MAX_LISTS_PER_SAMPLE` ``ListParticipants``, at most :data:`CONCURRENT_LISTS` at a
time, each within :data:`CALL_TIMEOUT_S`. Which rooms are listed, in this order:

1. rooms with a double still open (to time its end);
2. rooms whose ``num_participants`` minus the non-agents last listed there is two or more. LiveKit
   refreshes that count lazily (``roomUpdateInterval``, 5 s, in livekit-server's pkg/rtc/room.go),
   so it is a hint, not a filter;
3. every other room, least recently listed first (a rotation).

With the drills' fast size (12 rooms) every room is listed at every sample; with 200 rooms each is
listed about every ``200 / MAX_LISTS_PER_SAMPLE`` samples. :attr:`DoubleSampler.max_unlisted_s`
(the longest a live room went unlisted) is the resolution: a double shorter than it may be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from livekit import api as lkapi

SAMPLE_INTERVAL_S = 0.5
# The removal bound: how long an old agent and its replacement may legitimately share a room.
# When the orchestrator redispatches, it deletes the old dispatch and evicts the old agent
# (RemoveParticipant, orchestrator/controller.py ``_remove_agent``; a late agent of a replaced
# dispatch likewise, ``_stale_status``); livekit-server itself gives a terminated agent job 3 s
# to leave before removing its participant (``waitForParticipantLeaving`` in pkg/rtc/room.go).
# So two agents for up to 3 s is a removal in flight, reported as an *overlap*; longer is a
# *double agent*. The bound is applied to the measured duration, which includes up to one sample
# interval of slack (see Double.lasted_s).
REMOVAL_BOUND_S = 3.0
# ListParticipants calls per sample (plus one ListRooms). 40 is the fewest that still visits each
# of 200 rooms within 200 / 40 * 0.5 s = 2.5 s < REMOVAL_BOUND_S, so that every double longer than
# the bound is seen at least once. Measured (2-core machine, otherwise idle, livekit-server v1.13.5,
# 200 rooms): ListRooms ~1 ms, ListParticipants ~0.6 ms each; 40 lists 8 at a time ~15 ms, all 200
# ~65 ms; the sampler at 40 per sample took ~24 ms per sample and 4 % of one core of client CPU.
MAX_LISTS_PER_SAMPLE = 40
CONCURRENT_LISTS = 8
CALL_TIMEOUT_S = 2.0
STOP_WITHIN_S = 2 * CALL_TIMEOUT_S + 1.0  # a sample in flight: ListRooms plus one round of lists
DETAIL_LIMIT = 20  # doubles and overlaps listed in the report, each


@dataclass
class Double:
    """One spell of a room listing more than one agent."""

    room: str
    agents: set[str]  # every agent identity seen in the room during the spell
    began: float  # wall time the later agent joined (LiveKit's joined_at_ms), or first_seen
    first_seen: float  # wall time of the first listing that showed it
    last_seen: float  # ... and of the last one
    cleared: float | None = None  # the first listing with at most one agent again (or room gone)
    samples: int = 1
    most: int = 2  # the most agents listed at once

    @property
    def lasted_s(self) -> float:
        """began -> cleared (last_seen while open): an upper bound on how long the double lasted."""
        return (self.cleared if self.cleared is not None else self.last_seen) - self.began

    @property
    def is_double_agent(self) -> bool:
        return self.lasted_s > REMOVAL_BOUND_S

    def to_json(self, since: float) -> dict[str, Any]:
        def at(t: float | None) -> float | None:
            return None if t is None else round(t - since, 2)

        return {
            "room": self.room,
            "agents": sorted(self.agents),
            "most": self.most,
            "lasted_s": round(self.lasted_s, 2),
            "began_at_s": at(self.began),
            "first_seen_at_s": at(self.first_seen),
            "last_seen_at_s": at(self.last_seen),
            "cleared_at_s": at(self.cleared),
            "samples": self.samples,
        }


@dataclass
class DoubleReport:
    """What the sampler saw, for DrillResult."""

    started: float  # wall time the sampler started; the details' times are relative to it
    samples: int
    lists_per_sample_mean: float
    lists_per_sample_max: int
    sample_ms_p50: float
    sample_ms_max: float
    errors: int
    rooms_max: int
    max_unlisted_s: float
    doubles: list[Double] = field(default_factory=list)  # lasted longer than REMOVAL_BOUND_S
    overlaps: list[Double] = field(default_factory=list)  # within REMOVAL_BOUND_S

    @property
    def double_rooms(self) -> set[str]:
        return {d.room for d in self.doubles}

    @property
    def max_overlap_s(self) -> float | None:
        return round(max(d.lasted_s for d in self.overlaps), 2) if self.overlaps else None

    @property
    def max_double_s(self) -> float | None:
        return round(max(d.lasted_s for d in self.doubles), 2) if self.doubles else None

    def to_json(self) -> dict[str, Any]:
        since = self.started
        return {
            "samples": self.samples,
            "interval_s": SAMPLE_INTERVAL_S,
            "removal_bound_s": REMOVAL_BOUND_S,
            "calls_per_sample": f"1 ListRooms + ListParticipants mean {self.lists_per_sample_mean} "
            f"max {self.lists_per_sample_max} (bound {MAX_LISTS_PER_SAMPLE})",
            "sample_ms_p50": self.sample_ms_p50,
            "sample_ms_max": self.sample_ms_max,
            "errors": self.errors,
            "rooms_max": self.rooms_max,
            "max_unlisted_s": self.max_unlisted_s,
            "max_double_s": self.max_double_s,
            "max_overlap_s": self.max_overlap_s,
            "doubles": [d.to_json(since) for d in self.doubles[:DETAIL_LIMIT]],
            "overlaps": [d.to_json(since) for d in self.overlaps[:DETAIL_LIMIT]],
        }


class DoubleSampler:
    """``async with DoubleSampler(lk) as sampler: ...; report = await sampler.stop()``.

    One task, owned by the context manager: started on entry, stopped (and awaited, within
    :data:`STOP_WITHIN_S`) by :meth:`stop` or on exit. A failing LiveKit call counts as an error and
    the sampling goes on; any other exception is a bug and is raised by :meth:`stop`.
    """

    def __init__(self, lk: lkapi.LiveKitAPI, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.lk = lk
        self.interval_s = interval_s
        self.started = time.time()
        self.open: dict[str, Double] = {}
        self.closed: list[Double] = []
        self.samples = 0
        self.lists: list[int] = []  # ListParticipants calls per sample
        self.sample_ms: list[float] = []
        self.errors = 0
        self.rooms_max = 0
        self.max_unlisted_s = 0.0
        self._known: dict[str, float] = {}  # room -> monotonic time it was first in ListRooms
        self._listed: dict[str, float] = {}  # room -> monotonic time it was last listed
        self._non_agents: dict[str, int] = {}  # room -> non-agent participants at its last listing
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._report: DoubleReport | None = None

    async def __aenter__(self) -> DoubleSampler:
        self.started = time.time()
        self._task = asyncio.create_task(self._run(), name="double-sampler")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            await self.stop()
            return
        with contextlib.suppress(Exception):  # do not hide the run's own exception behind ours
            await self.stop()

    async def stop(self) -> DoubleReport:
        """Stop sampling (idempotent) and return what was seen."""
        if self._report is not None:
            return self._report
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            try:
                await asyncio.wait({task}, timeout=STOP_WITHIN_S)
            finally:  # overran, or we are cancelled ourselves: the task never outlives stop()
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if not task.cancelled():
                task.result()  # a bug in the sampler surfaces here
        # A double still open was last seen by the last sample (open ones are listed at every
        # sample): lasted_s runs to there; the end-of-run check decides whether it is still there.
        spells = sorted([*self.closed, *self.open.values()], key=lambda d: -d.lasted_s)
        self._report = DoubleReport(
            started=self.started,
            samples=self.samples,
            lists_per_sample_mean=round(statistics.fmean(self.lists), 1) if self.lists else 0.0,
            lists_per_sample_max=max(self.lists, default=0),
            sample_ms_p50=round(statistics.median(self.sample_ms), 1) if self.sample_ms else 0.0,
            sample_ms_max=round(max(self.sample_ms, default=0.0), 1),
            errors=self.errors,
            rooms_max=self.rooms_max,
            max_unlisted_s=round(self.max_unlisted_s, 2),
            doubles=[d for d in spells if d.is_double_agent],
            overlaps=[d for d in spells if not d.is_double_agent],
        )
        return self._report

    # -- sampling --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            await self._sample()
            self.sample_ms.append((time.monotonic() - began) * 1000)
            self.samples += 1
            # Every interval_s from start to start; an overrunning sample is followed at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, began + self.interval_s - time.monotonic())):
                    await self._stop.wait()

    async def _sample(self) -> None:
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                listed = await self.lk.room.list_rooms(lkapi.ListRoomsRequest())
        except Exception:
            self.errors += 1
            self.lists.append(0)
            return
        mono, wall = time.monotonic(), time.time()
        rooms = {r.name: r.num_participants for r in listed.rooms}
        self.rooms_max = max(self.rooms_max, len(rooms))
        for room in [r for r in self.open if r not in rooms]:  # the room is gone, and its agents
            self._clear(room, wall)
        for room in [r for r in self._known if r not in rooms]:
            self._known.pop(room, None)
            self._listed.pop(room, None)
            self._non_agents.pop(room, None)
        for room in rooms:
            self._known.setdefault(room, mono)

        def order(room: str) -> tuple[int, float]:
            if room in self.open:
                tier = 0
            elif rooms[room] - self._non_agents.get(room, 0) >= 2:
                tier = 1
            else:
                tier = 2
            return tier, self._listed.get(room, self._known[room])

        chosen = sorted(rooms, key=order)[:MAX_LISTS_PER_SAMPLE]
        self.lists.append(len(chosen))
        limit = asyncio.Semaphore(CONCURRENT_LISTS)

        async def one(room: str) -> None:
            async with limit:
                try:
                    async with asyncio.timeout(CALL_TIMEOUT_S):
                        got = await self.lk.room.list_participants(lkapi.ListParticipantsRequest(room=room))
                except Exception:
                    self.errors += 1
                    return
            self._seen(room, list(got.participants))

        await asyncio.gather(*(one(room) for room in chosen))

    def _seen(self, room: str, participants: list[Any]) -> None:
        mono, wall = time.monotonic(), time.time()
        self.max_unlisted_s = max(
            self.max_unlisted_s, mono - self._listed.get(room, self._known.get(room, mono))
        )
        self._listed[room] = mono
        agents = [p for p in participants if p.kind == lkapi.ParticipantInfo.Kind.AGENT]
        self._non_agents[room] = len(participants) - len(agents)
        if len(agents) <= 1:
            self._clear(room, wall)
            return
        double = self.open.get(room)
        if double is None:
            # Every agent listed has been in the room since it joined, so the room has had two
            # agents since the second-earliest of their joins.
            joined = sorted((p.joined_at_ms / 1000) or float(p.joined_at) for p in agents)
            began = min(joined[1], wall) if joined[1] > 0 else wall
            double = self.open[room] = Double(room, set(), began, wall, wall, samples=0)
        double.agents.update(p.identity for p in agents)
        double.last_seen = wall
        double.samples += 1
        double.most = max(double.most, len(agents))

    def _clear(self, room: str, wall: float) -> None:
        double = self.open.pop(room, None)
        if double is not None:
            double.cleared = wall
            self.closed.append(double)
