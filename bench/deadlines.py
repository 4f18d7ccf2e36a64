"""Measure 10 — deadlines: how late a room's timer fires, with the rooms a replica already tracks.

Method: Measure 9's machinery — nats-server, the Twirp stand-in as LiveKit (it has every room it is
asked about), one pool, ``eu-central-a``, of stand-in workers heartbeating over NATS, and copies of
a realistic ``speaking`` record written straight into the KV bucket as 0, then 10,000, then 100,000
live rooms (their jobs listed in the workers' beats, so none is a reservation and none fails over;
a speaking room has no timer). For each size a fresh ``switchboard orchestrator`` replica (INFO
logs, as in production) is started; once its room index has synced (/readyz) and a warm-up of 20
rooms has been through the path below (not measured: a fresh replica's first steps pay for
connections and first writes), a separate publisher process sends 300 ``RoomCreated`` at 30/s
(open loop, ``bench/publisher.py``). Each room is dispatched to the stand-in pool, whose workers
never report ``joined``, so it hits its **join deadline** (``orchestrator.join_deadline_s``, 2 s
here; the deadlines follow the event rate, ~30 due a second). The replica's sweep (woken at its
index's next wake-up time, and at least every ``sweep_interval_s`` = 0.25 s; until 52dc63b it slept
0.25 s after each pass and waited for the pass's steps) then moves it to ``redispatching`` (cause
``join_timeout``). Lateness of a room = the ``at`` of that ``redispatch``
history entry (the step's clock, taken after it read the record) − the record's ``deadline`` when
it was ``dispatched`` (both unix seconds from the replica's clock); the records are watched with a
core-NATS subscription on the KV bucket's subjects (a room the watch missed is read from KV).
Only each room's first deadline counts: ``max_attempts`` is 1, so the redispatch that follows
removes the (absent) agent and fails the room instead of dispatching it again. The time the driver
saw that write is recorded too (deadline → record written and delivered, a cross-check), and
the firing sweeps are told apart by the clusters of ``at`` values (the time from one to the next:
the sweep's real period; 0 when each deadline gets a pass of its own).

A room whose deadline had not fired 15 s after the last event counts at the time it had waited, so
the percentiles of such a size are lower bounds (marked ≥). Between sizes the events' records are
purged and the rooms stream emptied. The resync is off (the copies are rooms the stand-in never
created). Goal (issue 15, goal 3): p99 lateness ≤ 300 ms at every size.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError

from bench.common import (
    STANDIN_TIMINGS,
    Orchestrator,
    StandIn,
    cpu_seconds,
    pct,
    write_config,
)
from bench.liverooms import (
    _SECRET,
    JOBS_PER_WORKER,
    _cleanup,
    _index_size,
    grow_live_rooms,
    live_rooms_bench,
)
from bench.overhead import run_publisher
from orchestrator.store import room_key
from shared import subjects

SIZES = (0, 10_000, 100_000)
QUICK_SIZES = (0, 2_000)
EVENTS = 300
QUICK_EVENTS = 150
RATE = 30.0
JOIN_DEADLINE_S = 2.0
WARMUP_EVENTS = 20
WARMUP_RATE = 20.0
WARMUP_WAIT_S = 15.0  # after the warm-up's last event, for its rooms' deadlines
DRAIN_S = 15.0  # after the last event's deadline, for the deadlines still to fire
SETTLE_S = 2.0  # after /readyz, before the warm-up
START_LIMIT_S = 300.0  # a replica's start (syncing its index of up to 100,000 rooms)
GOAL_MS = 300.0
CAUSE = "join_timeout"


# ------------------------------------------------------------------------------------------------
# pure helpers
# ------------------------------------------------------------------------------------------------


def first_leave(rec: dict[str, Any]) -> tuple[float, str] | None:
    """(at, cause) of the first ``redispatch`` in a record's history (the step that ended its first
    dispatch), or None when it has none."""
    for h in rec.get("history") or []:
        if h.get("event") == "redispatch":
            return float(h["at"]), str((h.get("data") or {}).get("cause") or h.get("detail") or "?")
    return None


def lateness_stats(deadlines: dict[str, float], fired: dict[str, float], until: float) -> dict[str, Any]:
    """Lateness (ms) of every room with a deadline: fired − deadline; a room whose deadline has not
    fired counts at the time it had waited by ``until`` (censored), so with any censored the
    percentiles are lower bounds (``lower_bound``)."""
    done = [(fired[k] - d) * 1000 for k, d in deadlines.items() if k in fired]
    waited = [max(0.0, until - d) * 1000 for k, d in deadlines.items() if k not in fired]
    values = done + waited
    return {
        "measured": len(done),
        "censored": len(waited),
        "lower_bound": bool(waited),
        "p50_ms": pct(values, 50),
        "p90_ms": pct(values, 90),
        "p99_ms": pct(values, 99),
        "max_ms": max(values) if values else None,
        "min_ms": min(values) if values else None,
        "early": sum(1 for v in done if v < 0),
    }


def sweep_gaps(fired: list[float], split_s: float = 0.1) -> dict[str, Any]:
    """The firing sweeps, seen from the rooms' ``at`` values: the steps of one sweep decide within
    a few ms of each other, and sweeps are ≥ 0.25 s apart, so a gap over ``split_s`` starts the next
    one. Gap = from one firing sweep's first step to the next's (ms), its spread = first to last
    step of one sweep (ms)."""
    ats = sorted(fired)
    if not ats:
        return {"sweeps": 0}
    groups = [[ats[0]]]
    for a in ats[1:]:
        if a - groups[-1][-1] > split_s:
            groups.append([a])
        else:
            groups[-1].append(a)
    gaps = [(b[0] - a[0]) * 1000 for a, b in itertools.pairwise(groups)]
    spread = [(g[-1] - g[0]) * 1000 for g in groups]
    return {
        "sweeps": len(groups),
        "rooms_per_sweep": len(ats) / len(groups),
        "sweep_gap_p50_ms": pct(gaps, 50),
        "sweep_gap_max_ms": max(gaps) if gaps else None,
        "sweep_spread_p50_ms": pct(spread, 50),
        "sweep_spread_max_ms": max(spread),
    }


# ------------------------------------------------------------------------------------------------
# the watch
# ------------------------------------------------------------------------------------------------


class DeadlineWatch:
    """The event rooms' records as the replica writes them (a core-NATS subscription on the KV
    bucket's subjects): each room's join deadline from its first ``dispatched`` record, and the
    first step that took it out of ``dispatched``."""

    def __init__(self) -> None:
        self.prefix = ""
        self.deadline: dict[str, float] = {}  # room -> deadline of its first dispatch (unix s)
        self.dispatched_at: dict[str, float] = {}
        self.fired: dict[str, float] = {}  # room -> `at` of the join_timeout redispatch (unix s)
        self.seen: dict[str, float] = {}  # room -> when this driver received that write (unix s)
        self.other: dict[str, str] = {}  # room -> how it left `dispatched` otherwise

    def reset(self, prefix: str) -> None:
        self.prefix = prefix
        for d in (self.deadline, self.dispatched_at, self.fired, self.seen, self.other):
            d.clear()

    def settled(self, room: str) -> bool:
        return room in self.fired or room in self.other

    def take(self, room: str, rec: dict[str, Any], received: float | None) -> None:
        """Note one version of ``room``'s record."""
        state = rec.get("state")
        if state == "dispatched" and room not in self.deadline:
            if rec.get("deadline") is not None and rec.get("attempt") == 1:
                self.deadline[room] = float(rec["deadline"])
                self.dispatched_at[room] = float(rec.get("dispatched_at") or 0.0)
            return
        if state == "dispatched" or room not in self.deadline or self.settled(room):
            return
        left = first_leave(rec)
        if left is not None and left[1] == CAUSE:
            self.fired[room] = left[0]
            if received is not None:
                self.seen[room] = received
        else:
            self.other[room] = left[1] if left is not None else f"state {state}"

    async def on_kv(self, msg: Msg) -> None:
        received = time.time()
        if not self.prefix or not msg.data:
            return
        room = msg.subject.rsplit(".", 1)[-1]
        if not room.startswith(self.prefix):
            return
        with contextlib.suppress(ValueError, KeyError, TypeError):
            self.take(room, json.loads(msg.data), received)


async def _fill_from_kv(kv: Any, watch: DeadlineWatch) -> int:
    """The rooms whose deadline the watch saw set but not fire: read from KV (a message the
    subscription lost); how many were found that way."""
    found = 0
    for room in [r for r in watch.deadline if not watch.settled(r)]:
        with contextlib.suppress(KeyNotFoundError):
            entry = await kv.get(room_key(room))
            if entry.value:
                watch.take(room, json.loads(entry.value), None)
                found += watch.settled(room)
    return found


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------


async def _wait(watch: DeadlineWatch, rooms: list[str], until_mono: float) -> None:
    """Until every one of ``rooms`` that was dispatched has left ``dispatched`` (and every room was
    dispatched), or ``until_mono``."""
    while time.monotonic() < until_mono:
        if all(r in watch.deadline and watch.settled(r) for r in rooms):
            return
        await asyncio.sleep(0.25)


async def _events(
    orch: Orchestrator, nats_url: str, kv: Any, work: Path, size: int, events: int, watch: DeadlineWatch
) -> dict[str, Any]:
    prefix = f"fp-dl{size}-"
    watch.reset(prefix)
    # Warm-up (not measured): a fresh replica's first dispatches and deadline steps pay one-off costs.
    warm = await run_publisher(
        nats_url, "rooms", WARMUP_RATE, WARMUP_EVENTS, f"{prefix}wu", work / f"warmup-{size}.json"
    )
    await _wait(watch, list(warm["t0_ns"]), time.monotonic() + JOIN_DEADLINE_S + WARMUP_WAIT_S)
    warm_fired = sum(1 for r in warm["t0_ns"] if r in watch.fired)
    watch.reset(f"{prefix}ev")
    loadavg = os.getloadavg()[0]
    cpu0, t_start = cpu_seconds(orch.pid), time.monotonic()
    pub = await run_publisher(nats_url, "rooms", RATE, events, f"{prefix}ev", work / f"publisher-{size}.json")
    rooms = list(pub["t0_ns"])
    await _wait(watch, rooms, time.monotonic() + JOIN_DEADLINE_S + DRAIN_S)
    from_kv = await _fill_from_kv(kv, watch)
    until = time.time()
    phase_s = time.monotonic() - t_start
    cpu = (cpu_seconds(orch.pid) - cpu0) / phase_s
    stats = lateness_stats(watch.deadline, watch.fired, until)
    seen_ms = [(watch.seen[k] - watch.deadline[k]) * 1000 for k in watch.fired if k in watch.seen]
    write_ms = [(watch.seen[k] - watch.fired[k]) * 1000 for k in watch.fired if k in watch.seen]
    first = min(watch.deadline.values(), default=0.0)
    return {
        "prefix": prefix,
        "warmup_events": len(warm["t0_ns"]),
        "warmup_fired": warm_fired,
        "events": len(rooms),
        "rate": RATE,
        "achieved_rate": pub["achieved_rate"],
        "late_starts": pub["late_starts"],
        "publish_errors": pub["error_count"],
        "dispatched": len(watch.deadline),
        "other_exits": dict(sorted(watch.other.items())[:20]),
        "other_exit_count": len(watch.other),
        "read_from_kv": from_kv,
        "deadline_spread_s": (max(watch.deadline.values()) - first) if watch.deadline else None,
        "phase_s": phase_s,
        "replica_cores": cpu,
        "loadavg_at_events": loadavg,
        **stats,
        **sweep_gaps(list(watch.fired.values())),
        # deadline → the driver receiving the record written at the step (ms)
        "seen_p50_ms": pct(seen_ms, 50),
        "seen_p99_ms": pct(seen_ms, 99),
        # the step's `at` → the driver receiving its write (ms): the step's KV write and delivery
        "write_p50_ms": pct(write_ms, 50),
        "write_p99_ms": pct(write_ms, 99),
        # (s since the first deadline, lateness ms) per room that fired, in deadline order
        "samples": sorted(
            (d - first, (watch.fired[k] - d) * 1000) for k, d in watch.deadline.items() if k in watch.fired
        ),
    }


async def _size(
    work: Path,
    config: Path,
    nats_url: str,
    standin: StandIn,
    kv: Any,
    size: int,
    events: int,
    watch: DeadlineWatch,
) -> dict[str, Any]:
    orch = Orchestrator(work, config, nats_url, standin.url, "devkey", _SECRET, name=f"orch-dl-{size}")
    row: dict[str, Any] = {"live_rooms": size}
    try:
        t0 = time.monotonic()
        await asyncio.to_thread(orch.start, START_LIMIT_S)
        row["ready_s"] = time.monotonic() - t0
        row["index_rooms"] = await _index_size(orch)
        await asyncio.sleep(SETTLE_S)
        row.update(await _events(orch, nats_url, kv, work, size, events, watch))
    finally:
        await asyncio.to_thread(orch.stop)
    return row


def _print(row: dict[str, Any]) -> None:
    ge = "≥ " if row.get("lower_bound") else ""
    print(
        f"  {row['live_rooms']:>7,} live rooms: deadline lateness p50 {ge}{row['p50_ms']:.1f} / "
        f"p99 {ge}{row['p99_ms']:.1f} / max {ge}{row['max_ms']:.1f} ms, "
        f"{row['measured']}/{row['events']} measured, firing sweeps "
        f"{row.get('sweep_gap_p50_ms') or 0:.0f} ms apart (p50), "
        f"replica {row['replica_cores']:.0%} of a core, synced in {row['ready_s']:.1f} s",
        flush=True,
    )


def _notes(row: dict[str, Any]) -> list[str]:
    size = row["live_rooms"]
    if "error" in row:
        return [f"{size:,} live rooms: {row['error']}"]
    notes = []
    if row["censored"]:
        notes.append(
            f"{size:,} live rooms: {row['censored']} of {row['dispatched']} deadlines had not fired "
            f"{DRAIN_S:.0f} s after the last one was due (counted at the time they had waited: the "
            "percentiles are lower bounds)."
        )
    if row["dispatched"] < row["events"]:
        notes.append(
            f"{size:,} live rooms: {row['events'] - row['dispatched']} events were never dispatched."
        )
    if row["other_exit_count"]:
        notes.append(
            f"{size:,} live rooms: {row['other_exit_count']} rooms left `dispatched` for another reason "
            f"than their join deadline (not counted): {row['other_exits']}."
        )
    if row.get("index_rooms") is not None and row["index_rooms"] != size:
        notes.append(
            f"{size:,} live rooms: the replica's index held {row['index_rooms']:,} rooms when measured."
        )
    return notes


async def deadlines(work: Path, sizes: tuple[int, ...], events: int) -> dict[str, Any]:
    # join_deadline_s short (the phase stays short); max_attempts 1: each room's first deadline is
    # its only one (the redispatch fails the room instead of dispatching it again).
    timings = {**STANDIN_TIMINGS, "join_deadline_s": JOIN_DEADLINE_S, "max_attempts": 1}
    config = write_config(work / "switchboard.yaml", match="fp-*", resync_interval_s=0, **timings)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        # One event worker (the one the template's reports name), with room for every event room;
        # it never lists their jobs (nobody took them), so they are reservations until they fail.
        b = await stack.enter_async_context(live_rooms_bench(work, config, "nats-deadlines", 1))
        ns, standin, nc, js, kv = b.ns, b.standin, b.nc, b.js, b.kv
        live_workers, template, text, rec = b.live_workers, b.template, b.text, b.rec
        watch = DeadlineWatch()
        loaded = 0
        for size in sizes:
            load_s = await grow_live_rooms(nc, js, text, rec, live_workers, loaded, size, notes)
            if load_s is None:
                break
            loaded = size
            # Subscribed only while this size's events run: not to the live rooms' writes.
            sub = await nc.subscribe(f"$KV.{subjects.ROOMS_BUCKET}.*.r.*", cb=watch.on_kv)
            try:
                row = await _size(work, config, ns.url, standin, kv, size, events, watch)
            except Exception as exc:  # recorded; the next size still runs
                row = {"live_rooms": size, "error": f"{type(exc).__name__}: {exc}"}
                print(f"  {size:>7,} live rooms: ERROR {row['error']}", flush=True)
            finally:
                watch.reset("")
                await sub.unsubscribe()
            row.update(load_s=load_s, live_workers=len(live_workers))
            rows.append(row)
            await _cleanup(
                js,
                kv,
                [f"fp-dl{size}-ev{i}" for i in range(events)]
                + [f"fp-dl{size}-wu{i}" for i in range(WARMUP_EVENTS)],
            )
            notes += _notes(row)
            if "error" not in row:
                row["goal_met"] = None if row["p99_ms"] is None else row["p99_ms"] <= GOAL_MS
                _print(row)
    ok = [r for r in rows if "error" not in r and r.get("p99_ms") is not None]
    worst = max(ok, key=lambda r: r["p99_ms"], default=None)
    met: bool | None = None
    if ok and len(ok) == len(sizes):
        over = any(r["p99_ms"] > GOAL_MS for r in ok)
        # a lower bound decides only when it is already over the goal
        met = False if over else (None if any(r["lower_bound"] for r in ok) else True)
    return {
        "sizes": list(sizes),
        "rate": RATE,
        "events_per_size": events,
        "join_deadline_s": JOIN_DEADLINE_S,
        "warmup_events": WARMUP_EVENTS,
        "drain_s": DRAIN_S,
        "jobs_per_worker": JOBS_PER_WORKER,
        "template_record_bytes": len(template),
        "rows": rows,
        "worst_p99_ms": worst["p99_ms"] if worst else None,
        "worst_p99_rooms": worst["live_rooms"] if worst else None,
        "goal_ms": GOAL_MS,
        "goal_met": met,
        "notes": notes,
    }


async def run(work: Path, quick: bool = False) -> dict[str, Any]:
    if quick:
        return await deadlines(work, QUICK_SIZES, QUICK_EVENTS)
    return await deadlines(work, SIZES, EVENTS)
