"""Measure 11 — replicas divide the rooms: shares, takeover when one goes, start-up.

Method: Measure 9's machinery, one fresh set per size — nats-server, the Twirp stand-in as
LiveKit (it has every room it is asked about), one pool, ``eu-central-a``, of stand-in workers
heartbeating over NATS, and copies of a realistic ``speaking`` record (Measure 7's template)
written straight into the KV bucket as live rooms (their jobs listed in the workers' beats, 1,000
a worker, so none is a reservation and none fails over; a speaking room has no timer). The
replicas are real ``switchboard orchestrator`` subprocesses (INFO logs, ``member_ttl_s`` = 3 s,
the default); the resync is off (the copies are rooms the stand-in never created). Tracked rooms
are each replica's own ``switchboard_rooms_live`` gauge (/metrics: the rooms of the partitions it
tracks).

1. Shares and memory: three replicas are started with no rooms and RSS of each is taken (its
   process group), again once the live rooms' workers beat (their beats carry 1,000 job ids
   each, held by every replica), then the live rooms are written into KV while the three run;
   once the three gauges sum to the live rooms, each replica's share against 1/3 and its RSS
   growth per tracked room (RSS after − RSS once the workers beat, / its tracked rooms; "with
   beats" counts from before the workers).
2. Takeover, three phases: ``RoomCreated`` for new rooms is published at 50/s (a separate
   publisher process, open loop) for 10 s, and 3 s in one replica is sent SIGKILL (its membership
   key then lapses after ``member_ttl_s``); then the same with a fresh replica started (JOIN);
   then, once the new replica has had every worker's whole job list (10 beats: long lists come as
   deltas in between), with SIGTERM to another (a clean stop deletes its key). The replicas are
   polled every ~0.1 s: takeover time = the signal → the first poll at which the remaining
   replicas' ``speaking`` rooms (the pre-loaded ones; new rooms are only ``dispatched``: no worker
   reports on them) sum to every live room (JOIN: the new one tracking its share too). After each
   phase, once every new room has a CreateDispatch (bounded wait: a killed replica's unacked
   events come back after the consumer's 10 s ack wait), each new room is checked: dispatched
   exactly once (the stand-in's CreateDispatch calls against the rooms that got one, the distinct
   dispatch ids its record carried on the KV subjects, and its final record: state, attempt,
   ``dispatched`` entries in its history); the replicas' logs say how many were first parked in
   ``waiting_for_pool``. A core-NATS subscription on the KV subjects counts every write to a
   pre-loaded room over the three phases (nothing should move), and the gauges are read once
   more at the end.
3. Start-up: the replicas are stopped and a fresh replica is started alone (start → /readyz,
   bounded; its CPU seconds by then, the messages nats-server had sent it by then over all its
   connections, RSS and its growth per tracked room against a 0-room replica: the same figure for
   one replica tracking everything); then, at the first size only, 100,000 terminal (``ended``)
   copies of the record are written into KV as a room that ends leaves it in the rooms bucket
   (compacted, for ``ended_record_ttl_s``, an hour by default: 100,000 is 17 minutes of ended
   rooms at 100 new rooms/s) and one more fresh replica is started alone: what the terminal
   records cost a start-up (the partitions' watches still deliver them, and drop them unparsed:
   the messages sent to the replica say whether they were replayed). nats-server's log
   says when it closed a replica's connection as a slow consumer (over 64 MB pending).

The section stops itself within its time budget (every wait is bounded; the second size runs only
with enough of it left). Goal (issue 15, goal 2): with 3 replicas each tracks ~1/3 of live rooms
(± 15 %); when one dies its share is taken over within ``member_ttl_s``, nothing lost and no double
agent; memory per tracked room ≤ 2 KB in process; start-up does not replay terminal records.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError

from bench.common import (
    STANDIN_TIMINGS,
    Orchestrator,
    cpu_seconds,
    group_memory_kb,
    http_json,
    write_config,
)
from bench.liverooms import (
    _SECRET,
    JOBS_PER_WORKER,
    JobFeeder,
    LiveRoomsBench,
    _add_live_workers,
    _load,
    grow_live_rooms,
    latency_stats,
    live_rooms_bench,
    machine_busy_s,
)
from bench.overhead import run_publisher
from devstack.probe import http_get
from devstack.process import ServerProcess, ServerStartError
from orchestrator.records import HistoryEntry, RoomRecord, RoomState
from orchestrator.store import room_key
from shared import subjects
from shared.heartbeat_jobs import FULL_EVERY

SIZES = (30_000, 100_000)
QUICK_SIZES = (3_000,)
# Ended rooms' records, written for one more start-up at the first size (a week of ended rooms
# stays in KV: terminal_record_ttl_s).
TERMINAL = 100_000
QUICK_TERMINAL = 5_000
TERMINAL_BASE = 5_000_000  # terminal copies are live_room(TERMINAL_BASE + i)
REPLICAS = 3
MEMBER_TTL_S = 3.0  # the default
EVENT_RATE = 50.0
PHASE_S = 10.0  # events published per takeover phase: EVENT_RATE × PHASE_S
QUICK_PHASE_S = 8.0
SIGNAL_AFTER_S = 3.0  # into the phase
POLL_S = 0.1
TAKEOVER_LIMIT_S = 20.0
HOLD_S = 1.0  # polls kept after the takeover, to see it hold
DRAIN_S = 30.0  # after the last event, for the new rooms still without a CreateDispatch
SETTLE_S = 2.0
BEATS_S = 2.5  # for the live rooms' workers to be heard by every replica
# A whole job list from every worker at least this often (shared.heartbeat_jobs.FULL_EVERY beats
# of STANDIN_TIMINGS' 1 s), and a beat to spare.
JOB_LISTS_S = FULL_EVERY * 1.0 + 1.0
SYNC_LIMIT_S = 60.0
START_LIMIT_S = 60.0  # the three replicas (no rooms yet), the joiner
ALONE_LIMIT_S = 45.0  # a fresh replica alone, over every room
LOAD_LIMIT_S = 120.0
# The section stops itself within this (run.py's limit for it is 420 s); a size after the first
# starts only with SIZE_MIN_LEFT_S of it left.
BUDGET_S = 380.0
SIZE_MIN_LEFT_S = 150.0
EVENT_PREFIX = "fp-sh"
SHARE_GOAL = 0.15
MEMORY_GOAL_KB = 2.0
# Event workers: open slots for every new room of both phases (and the template).
EVENT_WORKERS = 3

_STARTED = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
_STATE = re.compile(r'switchboard_state="([^"]+)"')
_LIVE = re.compile(r"^fp-(\d{7,})$")
_PARTITIONS = re.compile(r"tracking (\d+) of the rooms' partitions")
_PROBLEM = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL)\s")
_SLOW = re.compile(
    r"^\[\d+\] (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) .*switchboard-orchestrator-([^\"\s]+)\"? - "
    r"Slow Consumer Detected"
)
_SYNCED = re.compile(r"room index synced: (\d+) live rooms in (\d+) of the partitions")


# ------------------------------------------------------------------------------------------------
# pure helpers
# ------------------------------------------------------------------------------------------------


def rooms_by_state(text: str) -> dict[str, int] | None:
    """Tracked rooms per state from a replica's /metrics (``switchboard_rooms_live``); None when
    the gauge is missing."""
    out: dict[str, int] = {}
    seen = False
    for line in text.splitlines():
        if not line.startswith("switchboard_rooms_live") or line.startswith("#"):
            continue
        with contextlib.suppress(ValueError, IndexError):
            value = float(line.rsplit(" ", 1)[1])
            m = _STATE.search(line)
            state = m.group(1) if m else "?"
            out[state] = out.get(state, 0) + int(value)
            seen = True
    return out if seen else None


def share_stats(counts: Mapping[str, int], total: int | None = None) -> dict[str, Any]:
    """Each replica's share of ``total`` (default: the sum) and its deviation from an equal share
    (count / (total / replicas) − 1); the largest deviation either way."""
    n = len(counts)
    total = sum(counts.values()) if total is None else total
    fair = total / n if n and total else None
    rows = {
        name: {
            "tracked": c,
            "share": c / total if total else None,
            "deviation": c / fair - 1 if fair else None,
        }
        for name, c in counts.items()
    }
    devs = [abs(r["deviation"]) for r in rows.values() if r["deviation"] is not None]
    return {
        "total": total,
        "sum": sum(counts.values()),
        "replicas": rows,
        "max_abs_deviation": max(devs) if devs else None,
    }


def reached(samples: Sequence[tuple[float, int | None]], target: int) -> float | None:
    """The time of the first sample whose value is at least ``target`` (samples in time order)."""
    return next((t for t, v in samples if v is not None and v >= target), None)


def live_index(room: str) -> int | None:
    """i of a live or terminal copy's name (``live_room(i)``), None for any other room."""
    m = _LIVE.match(room)
    return int(m.group(1)) if m else None


def count_dispatched(rec: Mapping[str, Any]) -> int:
    """``dispatched`` entries in a record's history (one per CreateDispatch that landed)."""
    return sum(1 for h in rec.get("history") or [] if h.get("event") == "dispatched")


def dispatch_audit(
    rooms: Sequence[str],
    arrivals: Mapping[str, int],
    ids_seen: Mapping[str, set[str]],
    records: Mapping[str, Mapping[str, Any] | None],
    creates: int | None,
) -> dict[str, Any]:
    """Every new room dispatched exactly once? ``arrivals``: rooms the stand-in got a CreateDispatch
    for; ``ids_seen``: distinct dispatch ids the room's record carried on the KV subjects;
    ``records``: the final records (None: none); ``creates``: CreateDispatch calls the stand-in
    counted over the phase (None: unknown)."""
    lost = [r for r in rooms if r not in arrivals]
    no_record = [r for r in rooms if records.get(r) is None]
    not_dispatched = {
        r: str(rec.get("state"))
        for r in rooms
        if (rec := records.get(r)) is not None and rec.get("state") != "dispatched"
    }
    doubled: dict[str, str] = {}
    for r in rooms:
        rec = records.get(r)
        why = []
        if len(ids_seen.get(r, ())) > 1:
            why.append(f"{len(ids_seen[r])} dispatch ids")
        if rec is not None and count_dispatched(rec) > 1:
            why.append(f"{count_dispatched(rec)} dispatched entries")
        if rec is not None and int(rec.get("attempt") or 0) > 1:
            why.append(f"attempt {rec.get('attempt')}")
        if why:
            doubled[r] = ", ".join(why)
    got = sum(1 for r in rooms if r in arrivals)
    extra = None if creates is None else creates - got
    return {
        "rooms": len(rooms),
        "dispatched": got,
        "lost": len(lost),
        "lost_rooms": lost[:20],
        "no_record": len(no_record),
        "not_dispatched": len(not_dispatched),
        "not_dispatched_rooms": dict(list(not_dispatched.items())[:20]),
        "doubled": len(doubled),
        "doubled_rooms": dict(list(doubled.items())[:20]),
        "create_dispatch_calls": creates,
        "extra_create_dispatch": extra,
        "exactly_once": not lost and not doubled and not no_record and (extra is None or extra == 0),
    }


def terminal_template(rec: RoomRecord, now: float) -> RoomRecord:
    """The template record as the room's ``ended`` record, as a room that ends leaves it in the
    rooms bucket for ``ended_record_ttl_s`` (compacted: its full form goes to the archive bucket,
    which no replica watches)."""
    ended = HistoryEntry(at=now, event="ended", state=RoomState.ENDED, detail="room ended (bench copy)")
    return rec.model_copy(
        update={
            "state": RoomState.ENDED,
            "reason": "room_ended",
            "deadline": None,
            "owner": None,
            "lease_until": None,
            "history": [*rec.history, ended],
        }
    ).compacted()


def last_match(pattern: re.Pattern[str], text: str) -> tuple[int, ...] | None:
    """The integers of the last line ``pattern`` matches in a log."""
    found = pattern.findall(text)
    if not found:
        return None
    last = found[-1]
    return tuple(int(x) for x in (last if isinstance(last, tuple) else (last,)))


def log_problems(text: str, keep: int = 5) -> dict[str, Any] | None:
    """WARNING and worse lines of a replica's log (text format): how many, and the first few."""
    lines = [ln for ln in text.splitlines() if _PROBLEM.search(ln)]
    return {"count": len(lines), "first": [ln[:300] for ln in lines[:keep]]} if lines else None


def slow_consumers(nats_log: str) -> list[tuple[float, str]]:
    """(unix time, replica id) of each replica connection nats-server closed as a slow consumer
    (its log is in local time)."""
    out = []
    for line in nats_log.splitlines():
        m = _SLOW.match(line)
        if m:
            at = datetime.strptime(m.group(1), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            out.append((at, m.group(2)))
    return out


def replica_pid(replica: str) -> int | None:
    """The pid in a replica id (``<host>-<pid>-<hex>``, :func:`orchestrator.service.replica_id`)."""
    parts = replica.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def per_room_kb(after: float | None, before: float | None, rooms: int | None) -> float | None:
    if after is None or before is None or not rooms or rooms <= 0:
        return None
    return (after - before) / rooms


# ------------------------------------------------------------------------------------------------
# probes
# ------------------------------------------------------------------------------------------------


async def _states(orch: Orchestrator, wait_s: float = 2.0) -> dict[str, int] | None:
    status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{orch.http_port}/metrics", wait_s)
    return rooms_by_state(body.decode(errors="replace")) if status == 200 else None


def _total(states: Mapping[str, int] | None) -> int | None:
    return None if states is None else sum(states.values())


def _rss(orch: Orchestrator) -> tuple[int, int]:
    _, rss, pss = group_memory_kb(orch.pid)
    return rss, pss


def _creates(b: LiveRoomsBench) -> int | None:
    with contextlib.suppress(Exception):
        return int(http_json(f"{b.standin.url}/_bench/stats", timeout=10).get("CreateDispatch", 0))
    return None


def _connections(b: LiveRoomsBench, pid: int) -> dict[str, Any]:
    """What nats-server has sent the replica, over all its connections so far (closed ones too: a
    slow consumer's connection is closed by the server and the client connects again). A
    connection's name holds the replica id, which holds its pid."""
    with contextlib.suppress(Exception):
        data = http_json(f"http://127.0.0.1:{b.ns.monitor_port}/connz?state=all&limit=100000", timeout=10)
        mine = [
            c
            for c in data.get("connections") or []
            if str(c.get("name") or "").startswith("switchboard-orchestrator-")
            and f"-{pid}-" in str(c.get("name"))
        ]
        return {
            "connections": len(mine),
            "out_msgs": sum(int(c.get("out_msgs") or 0) for c in mine),
            "out_bytes": sum(int(c.get("out_bytes") or 0) for c in mine),
        }
    return {"connections": None, "out_msgs": None, "out_bytes": None}


def _nats_log(b: LiveRoomsBench) -> str:
    path: Path = b.ns.data_dir / f"{b.ns.name}.log"
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")
    return ""


async def _wait_total(orchs: Sequence[Orchestrator], target: int, limit_s: float) -> float | None:
    """Seconds until the replicas' tracked rooms sum to ``target``; None at ``limit_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        totals = [_total(s) for s in await asyncio.gather(*(_states(o, 5.0) for o in orchs))]
        if None not in totals and sum(t for t in totals if t is not None) == target:
            return time.monotonic() - t0
        await asyncio.sleep(0.2)
    return None


def _f_count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _partitions(orch: Orchestrator) -> int | None:
    found = last_match(_PARTITIONS, orch.log_text())
    return found[0] if found else None


class OutOfBudget(RuntimeError):
    """The section's own time budget is used up (it stops itself before ``run``'s limit)."""


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def clip(self, limit_s: float, step: str) -> float:
        """``limit_s``, or what is left of the budget if less; OutOfBudget when nothing is."""
        left = self.left()
        if left < 5:
            raise OutOfBudget(f"the section's time budget was used up before: {step}")
        return min(limit_s, left)


# ------------------------------------------------------------------------------------------------
# the KV subjects: the new rooms' dispatch ids, writes to pre-loaded rooms
# ------------------------------------------------------------------------------------------------


class KvTracker:
    def __init__(self, feeder: JobFeeder, live: int) -> None:
        self.feeder = feeder
        self.live = live
        self.ids: dict[str, set[str]] = {}
        self.moved: dict[str, int] = {}
        self.moved_states: dict[str, str] = {}

    async def on_kv(self, msg: Msg) -> None:
        room = msg.subject.rsplit(".", 1)[-1]
        if room.startswith(EVENT_PREFIX):
            await self.feeder.on_kv(msg)
            if msg.data and b'"dispatch_id":"' in msg.data:
                with contextlib.suppress(ValueError, TypeError):
                    dispatch_id = json.loads(msg.data).get("dispatch_id")
                    if dispatch_id:
                        self.ids.setdefault(room, set()).add(str(dispatch_id))
            return
        i = live_index(room)
        if i is not None and i < self.live:
            self.moved[room] = self.moved.get(room, 0) + 1
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                self.moved_states[room] = str(json.loads(msg.data).get("state")) if msg.data else "deleted"


async def _records(b: LiveRoomsBench, rooms: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for room in rooms:
        try:
            entry = await b.kv.get(room_key(room))
            out[room] = json.loads(entry.value) if entry.value else None
        except KeyNotFoundError:
            out[room] = None
    return out


# ------------------------------------------------------------------------------------------------
# the replicas
# ------------------------------------------------------------------------------------------------


def _launch(orch: Orchestrator, limit_s: float) -> float | None:
    """Start the replica; seconds until its /readyz answered 200, or None when it had not within
    ``limit_s`` (it is left running: what it was doing is read before it is stopped)."""
    orch.workdir.mkdir(parents=True, exist_ok=True)
    orch.process = ServerProcess(
        orch.name, [*orch.command, "orchestrator"], orch.workdir / f"{orch.name}.log", env=orch.env()
    )
    orch.process.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if not orch.process.running:
            raise ServerStartError(f"{orch.name} exited:\n{orch.process.log_tail()}")
        if orch.ready():
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


class Replicas:
    """The bench's replicas by name, each a real ``switchboard orchestrator``; all stopped at the end."""

    def __init__(self, b: LiveRoomsBench, work: Path, config: Path) -> None:
        self.b, self.work, self.config = b, work, config
        self.running: dict[str, Orchestrator] = {}
        self.all: list[Orchestrator] = []
        self.not_ready: dict[str, str] = {}  # name -> its /readyz answer when the wait ended
        self.started: dict[str, float] = {}  # name -> when it was started (monotonic)

    def make(self, name: str) -> Orchestrator:
        orch = Orchestrator(
            self.work, self.config, self.b.ns.url, self.b.standin.url, "devkey", _SECRET, name=name
        )
        self.all.append(orch)
        return orch

    async def start(self, name: str, limit_s: float) -> tuple[Orchestrator, float | None]:
        orch = self.make(name)
        self.running[name] = orch
        return orch, await self.launch(orch, limit_s)

    async def launch(self, orch: Orchestrator, limit_s: float) -> float | None:
        self.started[orch.name] = time.monotonic()
        ready_s = await asyncio.to_thread(_launch, orch, limit_s)
        if ready_s is None:
            status, body = await asyncio.to_thread(orch.probe, "/readyz")
            self.not_ready[orch.name] = f"{status} {body[:500]}"
        return ready_s

    async def stop(self, name: str) -> None:
        orch = self.running.pop(name)
        await asyncio.to_thread(orch.stop)

    async def stop_all(self) -> None:
        names = list(self.running)
        await asyncio.gather(*(self.stop(n) for n in names))
        for orch in self.all:  # anything a failure left behind
            with contextlib.suppress(Exception):
                await asyncio.to_thread(orch.stop)

    def name_of(self, pid: int) -> str | None:
        return next((o.name for o in self.all if o.process is not None and o.process.pid == pid), None)


def _slow_by_replica(reps: Replicas, b: LiveRoomsBench, since: float, until: float) -> dict[str, int]:
    """Slow-consumer disconnects nats-server logged for each replica between two wall times."""
    out: dict[str, int] = {}
    for at, replica in slow_consumers(_nats_log(b)):
        if since <= at <= until:
            pid = replica_pid(replica)
            name = (reps.name_of(pid) if pid is not None else None) or replica
            out[name] = out.get(name, 0) + 1
    return out


# ------------------------------------------------------------------------------------------------
# the phases
# ------------------------------------------------------------------------------------------------


async def _shares(
    reps: Replicas, b: LiveRoomsBench, size: int, notes: list[str], budget: Budget
) -> dict[str, Any]:
    """Three replicas, no rooms → the live rooms' workers beating → the live rooms loaded."""
    since = time.time()
    names = [f"r{size // 1000}k-{c}" for c in "abc"][:REPLICAS]
    limit = budget.clip(START_LIMIT_S, "starting three replicas")
    started = await asyncio.gather(*(reps.start(n, limit) for n in names))
    ready = {n: s for n, (_, s) in zip(names, started, strict=True)}
    if any(s is None for s in ready.values()):
        raise RuntimeError(f"replicas not ready within {limit:.0f} s of their start: {reps.not_ready}")
    await asyncio.sleep(SETTLE_S)
    empty = {n: _rss(reps.running[n]) for n in names}
    await _add_live_workers(b.nc, b.live_workers, size)
    await asyncio.sleep(BEATS_S)
    beats = {n: _rss(reps.running[n]) for n in names}
    load_s = await grow_live_rooms(b.nc, b.js, b.text, b.rec, b.live_workers, 0, size, notes)
    if load_s is None:
        raise RuntimeError(f"{size:,} live rooms were not written into KV within the time limit")
    t0 = time.monotonic()
    orchs = [reps.running[n] for n in names]
    limit = budget.clip(SYNC_LIMIT_S, "the three replicas' sync")
    synced = await _wait_total(orchs, size, limit)
    if synced is None:
        totals = [_total(await _states(o, 5.0)) for o in orchs]
        parts = [_partitions(o) for o in orchs]
        known = [t for t in totals if t is not None]
        over = len(known) == len(totals) and sum(known) > size
        raise RuntimeError(
            f"the three replicas' tracked rooms never summed to {size:,} within {limit:.0f} s: they "
            f"tracked {', '.join(_f_count(t) for t in totals)} rooms with {parts} partitions"
            + (
                f" ({sum(known) - size:,} more than exist: some rooms tracked by two replicas)"
                if over
                else ""
            )
        )
    sync_s = time.monotonic() - t0 + load_s
    await asyncio.sleep(SETTLE_S)
    counts = {n: _total(await _states(reps.running[n], 5.0)) or 0 for n in names}
    loaded = {n: _rss(reps.running[n]) for n in names}
    stats = share_stats(counts, size)
    for n in names:
        row = stats["replicas"][n]
        row.update(
            ready_s=ready[n],
            partitions=_partitions(reps.running[n]),
            rss_kb_empty=empty[n][0],
            rss_kb_beats=beats[n][0],
            rss_kb_loaded=loaded[n][0],
            pss_kb_loaded=loaded[n][1],
            rss_kb_per_room=per_room_kb(loaded[n][0], beats[n][0], counts[n]),
            pss_kb_per_room=per_room_kb(loaded[n][1], beats[n][1], counts[n]),
            rss_kb_per_room_with_beats=per_room_kb(loaded[n][0], empty[n][0], counts[n]),
        )
    per = [r["rss_kb_per_room"] for r in stats["replicas"].values() if r["rss_kb_per_room"] is not None]
    return {
        **stats,
        "load_s": load_s,
        "synced_s": sync_s,
        "rss_kb_per_room_max": max(per) if per else None,
        "rss_kb_per_room_mean": statistics.fmean(per) if per else None,
        "rss_kb_empty_mean": statistics.fmean(v[0] for v in empty.values()),
        "rss_kb_beats_mean": statistics.fmean(v[0] for v in beats.values()),
        "slow_consumer_disconnects": _slow_by_replica(reps, b, since, time.time()),
    }


async def _takeover(
    reps: Replicas,
    b: LiveRoomsBench,
    tracker: KvTracker,
    work: Path,
    size: int,
    target: str,
    sig: str,
    prefix: str,
    phase_s: float,
    budget: Budget,
) -> dict[str, Any]:
    """Publish new rooms' events; on the way, ``sig`` to replica ``target`` (SIGKILL, SIGTERM) or a
    fresh replica ``target`` started (JOIN); poll until the replicas left (or all, the new one
    included) track every live room; then audit the new rooms."""
    budget.clip(phase_s + 10, f"the {sig} phase")
    since = time.time()
    loadavg = os.getloadavg()[0]
    joining = sig == "JOIN"
    polled = dict(reps.running) if joining else {n: o for n, o in reps.running.items() if n != target}
    busy0, cpu0 = machine_busy_s(), {n: cpu_seconds(o.pid) for n, o in polled.items()}
    phase0 = time.monotonic()
    before = {n: await _states(o, 5.0) for n, o in reps.running.items()}
    creates0 = _creates(b)
    count = int(EVENT_RATE * phase_s)
    pub = asyncio.create_task(
        run_publisher(b.ns.url, "rooms", EVENT_RATE, count, prefix, work / f"publisher-{prefix}.json")
    )
    await asyncio.sleep(SIGNAL_AFTER_S)
    limit = budget.clip(TAKEOVER_LIMIT_S, f"the {sig} takeover")
    t0, signal_ns = time.monotonic(), time.time_ns()
    waiting: asyncio.Task[Any] | None = None
    exit_s: float | None = None
    if joining:
        orch = reps.make(target)
        reps.running[target] = polled[target] = orch
        waiting = asyncio.create_task(reps.launch(orch, limit))
    else:
        orch = reps.running.pop(target)
        if sig == "SIGKILL":
            await asyncio.to_thread(orch.kill)
            exit_s = time.monotonic() - t0
        else:
            waiting = asyncio.create_task(asyncio.to_thread(orch.stop))
    samples: list[tuple[float, dict[str, int | None]]] = []
    takeover: float | None = None
    while True:
        tick = time.monotonic()
        states = await asyncio.gather(*(_states(o) for o in polled.values()))
        t = time.monotonic() - t0
        seen = {n: s.get("speaking", 0) if s else None for n, s in zip(polled, states, strict=True)}
        samples.append((t, seen))
        if waiting is not None and exit_s is None and waiting.done():
            exit_s = t  # the stopped replica gone, or the new one ready
        done = None not in seen.values() and sum(v for v in seen.values() if v is not None) >= size
        if joining:
            done = done and bool(seen.get(target))
        if takeover is None and done:
            takeover = t
        if (takeover is not None and t >= takeover + HOLD_S) or t > limit:
            break
        await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - tick)))
    if waiting is not None:
        await waiting
        if exit_s is None:
            exit_s = time.monotonic() - t0
    published = await pub
    phase = time.monotonic() - phase0
    busy = (machine_busy_s() - busy0) / phase
    cores = {n: (cpu_seconds(o.pid) - cpu0[n]) / phase for n, o in polled.items() if n in cpu0}
    rooms = list(published["t0_ns"])
    t0_ns = {k: int(v) for k, v in published["t0_ns"].items()}
    deadline = time.monotonic() + budget.clip(DRAIN_S, f"the {sig} phase's drain")
    arrivals: dict[str, int] = {}
    while True:
        arrivals = await asyncio.to_thread(b.standin.arrivals, prefix)
        if all(r in arrivals for r in rooms) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    until_ns = time.time_ns()
    await asyncio.sleep(1.0)  # the last dispatched records' writes
    creates1 = _creates(b)
    records = await _records(b, rooms)
    audit = dispatch_audit(
        rooms,
        arrivals,
        tracker.ids,
        records,
        None if creates0 is None or creates1 is None else creates1 - creates0,
    )
    after = {n: await _states(o, 5.0) for n, o in polled.items()}
    sums = [sum(v for v in c.values() if v is not None) for _, c in samples if None not in c.values()]
    lat = latency_stats(t0_ns, arrivals, until_ns)
    parked = {
        o.name: len(re.findall(rf"room {re.escape(prefix)}\d+: received -> waiting_for_pool", o.log_text()))
        for o in reps.all
    }
    return {
        "signal": sig,
        "target": target,
        "target_tracked_before": _total(before.get(target)),
        "target_partitions": _partitions(orch),
        "polled": list(polled),
        "takeover_s": takeover,
        "takeover_limit_s": limit,
        # SIGKILL / SIGTERM: the process gone; JOIN: the new replica ready (/readyz)
        "exit_s": exit_s,
        "not_ready": reps.not_ready.get(target) if joining else None,
        "speaking_max": max(sums, default=None),
        # below the pre-signal sum: partitions moving between replicas too (dropped by one, not
        # yet replayed by the other), as the balanced assignment re-deals them
        "speaking_min": min(sums, default=None),
        "speaking_final": sums[-1] if sums else None,
        "unanswered_polls": sum(1 for _, c in samples if None in c.values()),
        "samples": [(t, sum(v for v in c.values() if v is not None)) for t, c in samples],
        "states_after": after,
        "tracked_after": {n: _total(s) for n, s in after.items()},
        "events": len(rooms),
        "publish_errors": published["error_count"],
        "achieved_rate": published["achieved_rate"],
        "event_to_dispatch_p50_ms": lat["p50_ms"],
        "event_to_dispatch_p99_ms": lat["p99_ms"],
        "event_to_dispatch_max_ms": lat["max_ms"],
        "events_over_1s": sum(1 for r in rooms if r in arrivals and arrivals[r] - t0_ns[r] > 1e9),
        # new rooms a replica first parked in waiting_for_pool (no pool with room, as it saw them)
        "parked_for_pool": sum(parked.values()),
        "parked_by_replica": {n: c for n, c in parked.items() if c},
        # (s since the signal, ms to CreateDispatch or None) per event, in publish order
        "latency_samples": sorted(
            ((t - signal_ns) / 1e9, (arrivals[r] - t) / 1e6 if r in arrivals else None)
            for r, t in t0_ns.items()
        ),
        "slow_consumer_disconnects": _slow_by_replica(reps, b, since, time.time()),
        # from the phase's start to the last event: every core busy (others' jobs too) and each
        # polled replica's share (1.00 = a core)
        "loadavg_at_start": loadavg,
        "machine_cores_busy": busy,
        "replica_cores": cores,
        "started_at": since,
        **audit,
    }


async def _alone(reps: Replicas, b: LiveRoomsBench, name: str, budget: Budget) -> dict[str, Any]:
    """A fresh replica started alone: its start to /readyz (bounded) and what it had cost by then."""
    since = time.time()
    limit = budget.clip(ALONE_LIMIT_S, f"starting {name}")
    orch, ready_s = await reps.start(name, limit)
    cpu = cpu_seconds(orch.pid)
    conn = await asyncio.to_thread(_connections, b, orch.pid)
    if ready_s is not None:
        await asyncio.sleep(SETTLE_S)
    states = await _states(orch, 10.0)
    rss, pss = _rss(orch)
    synced = last_match(_SYNCED, orch.log_text())
    await reps.stop(name)
    return {
        "ready_s": ready_s,
        "limit_s": limit,
        "not_ready": reps.not_ready.get(name),
        # by /readyz, or by the end of the wait when it was not ready
        "cpu_s_to_ready": cpu,
        "nats_connections": conn["connections"],
        "nats_out_msgs_to_ready": conn["out_msgs"],
        "nats_out_bytes_to_ready": conn["out_bytes"],
        "tracked": _total(states),
        "synced_rooms": synced[0] if synced else None,
        "synced_partitions": synced[1] if synced else None,
        "rss_kb": rss,
        "pss_kb": pss,
        "slow_consumer_disconnects": sum(_slow_by_replica(reps, b, since, time.time()).values()),
    }


async def _size(
    work: Path, size: int, terminal: int, phase_s: float, budget: Budget, row: dict[str, Any]
) -> None:
    """Measure one size into ``row`` (what was measured stays there if a later step fails)."""
    work = work / f"size-{size}"
    config = write_config(
        work / "switchboard.yaml",
        match="fp-*",
        resync_interval_s=0,
        member_ttl_s=MEMBER_TTL_S,
        **STANDIN_TIMINGS,
    )
    row["logs"] = str(work)
    reps: Replicas | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            b = await stack.enter_async_context(live_rooms_bench(work, config, "nats-sharing", EVENT_WORKERS))
            reps = Replicas(b, work, config)
            stack.push_async_callback(reps.stop_all)
            row["template_record_bytes"] = len(b.template)
            await _measure(b, reps, work, size, terminal, phase_s, budget, row)
            row["nats_slow_consumer_lines"] = len(slow_consumers(_nats_log(b)))
    finally:
        if reps is not None:
            problems = {o.name: log_problems(o.log_text()) for o in reps.all}
            row["log_problems"] = {name: p for name, p in problems.items() if p is not None}
        _keep_logs(work, size)


def _keep_logs(work: Path, size: int) -> None:
    """The size's logs (replicas, nats-server, stand-in) copied out of the bench's temporary work
    directory, which is removed when the run ends."""
    keep = Path(tempfile.gettempdir()) / "switchboard-bench-sharing-logs" / _STARTED / f"size-{size}"
    with contextlib.suppress(OSError):
        for log in work.rglob("*.log"):
            dest = keep / log.relative_to(work)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log, dest)
        print(f"  {size:>7,}: logs kept in {keep}", flush=True)


async def _measure(
    b: LiveRoomsBench,
    reps: Replicas,
    work: Path,
    size: int,
    terminal: int,
    phase_s: float,
    budget: Budget,
    row: dict[str, Any],
) -> None:
    notes: list[str] = row["notes"]
    k = f"r{size // 1000}k"

    # 1. three replicas: shares and memory
    three = await _shares(reps, b, size, notes, budget)
    row["three"] = three
    _print_shares(size, three)

    # 2. takeover: SIGKILL, a replica joining, SIGTERM; every write to a pre-loaded room counted
    feeder = JobFeeder(b.event_workers)
    feeder.reset(EVENT_PREFIX)
    tracker = KvTracker(feeder, size)
    sub = await b.nc.subscribe(f"$KV.{subjects.ROOMS_BUCKET}.>", cb=tracker.on_kv)
    try:
        names = list(reps.running)
        kill = await _takeover(
            reps, b, tracker, work, size, names[-1], "SIGKILL", f"{EVENT_PREFIX}{size}k-", phase_s, budget
        )
        row["kill"] = kill
        _print_takeover(size, kill)
        join = await _takeover(
            reps, b, tracker, work, size, f"{k}-d", "JOIN", f"{EVENT_PREFIX}{size}j-", phase_s, budget
        )
        row["join"] = join
        _print_takeover(size, join)
        # A replica's view of long job lists (over 32 jobs a worker, sent as deltas) is complete
        # only once each worker's next whole list came (FULL_EVERY beats): the SIGTERM phase
        # starts after that, so what it measures is the stop, not the join.
        started = reps.started.get(f"{k}-d", 0.0)
        await asyncio.sleep(max(0.0, started + JOB_LISTS_S - time.monotonic()))
        term = await _takeover(
            reps, b, tracker, work, size, names[0], "SIGTERM", f"{EVENT_PREFIX}{size}t-", phase_s, budget
        )
        row["term"] = term
        _print_takeover(size, term)
    finally:
        await sub.unsubscribe()
        row["moved_writes"] = sum(tracker.moved.values())
        row["moved_rooms"] = len(tracker.moved)
        row["moved_examples"] = dict(list(tracker.moved_states.items())[:20])
    final = {n: await _states(o, 5.0) for n, o in reps.running.items()}
    row["final_states"] = final
    row["final_speaking"] = sum((s or {}).get("speaking", 0) for s in final.values())
    row["final_total"] = sum(_total(s) or 0 for s in final.values())
    row["expected_total"] = size + row["kill"]["rooms"] + row["join"]["rooms"] + row["term"]["rooms"]

    # 3. start-up, alone: without, then (first size only) with terminal records
    await reps.stop_all()
    alone = await _alone(reps, b, f"{k}-alone", budget)
    alone["rss_kb_per_room"] = per_room_kb(alone["rss_kb"], three["rss_kb_beats_mean"], alone["tracked"])
    row["alone"] = alone
    _print_alone(size, alone)
    if not terminal:
        return
    text_t = terminal_template(b.rec, datetime.now(UTC).timestamp()).model_dump_json()
    rec_t = RoomRecord.model_validate_json(text_t)
    t0 = time.monotonic()
    async with asyncio.timeout(budget.clip(LOAD_LIMIT_S, "writing the terminal records")):
        await _load(b.js, text_t, rec_t, TERMINAL_BASE, TERMINAL_BASE + terminal)
    row["terminal_load_s"] = time.monotonic() - t0
    info = await b.js.stream_info(f"KV_{subjects.ROOMS_BUCKET}")
    row["kv_records"] = info.state.messages
    row["kv_bytes"] = info.state.bytes
    row["alone_terminal"] = await _alone(reps, b, f"{k}-alone-t", budget)
    _derive_startup(row)
    _print_startup(size, row)


def _derive_startup(row: dict[str, Any]) -> None:
    a, t = row["alone"], row["alone_terminal"]
    n = row["terminal_records"]

    def diff(key: str) -> float | None:
        return None if a.get(key) is None or t.get(key) is None else t[key] - a[key]

    row["terminal_extra_ready_s"] = diff("ready_s")
    row["terminal_extra_cpu_s"] = diff("cpu_s_to_ready")
    row["terminal_extra_msgs"] = diff("nats_out_msgs_to_ready")
    row["terminal_extra_bytes"] = diff("nats_out_bytes_to_ready")
    row["terminal_extra_rss_kb"] = diff("rss_kb")
    extra_cpu = row["terminal_extra_cpu_s"]
    ok = t.get("ready_s") is not None
    row["terminal_cpu_us_per_record"] = extra_cpu * 1e6 / n if ok and extra_cpu is not None and n else None
    msgs = row["terminal_extra_msgs"]
    # Replayed: the replica was sent (about) one message more per terminal record.
    row["terminal_replayed"] = None if msgs is None or not n else msgs >= 0.9 * n


# ------------------------------------------------------------------------------------------------
# progress lines
# ------------------------------------------------------------------------------------------------


def _s(x: float | None, fmt: str = ".1f") -> str:
    return "never" if x is None else f"{x:{fmt}} s"


def _print_shares(size: int, s: dict[str, Any]) -> None:
    parts = ", ".join(
        f"{r['tracked']:,} ({r['share']:.1%}, {r['partitions']} partitions, "
        f"{r['rss_kb_per_room'] or 0:.2f} kB/room)"
        for r in s["replicas"].values()
    )
    print(
        f"  {size:>7,} live rooms, 3 replicas: {parts}; max deviation {s['max_abs_deviation']:.1%}; "
        f"synced {s['synced_s']:.1f} s after the load began",
        flush=True,
    )


def _print_takeover(size: int, k: dict[str, Any]) -> None:
    if k["signal"] == "JOIN":
        what = f"JOIN {k['target']} (ready {_s(k['exit_s'])}): all {len(k['polled'])} track all after"
    else:
        what = (
            f"{k['signal']} {k['target']} ({k['target_tracked_before'] or 0:,} rooms): survivors track all "
            "after"
        )
    print(
        f"  {size:>7,}: {what} {_s(k['takeover_s'], '.2f')} (TTL {MEMBER_TTL_S:g} s); new rooms "
        f"{k['dispatched']}/{k['rooms']} dispatched, {k['doubled']} doubled, {k['extra_create_dispatch']} "
        f"extra CreateDispatch, {k['parked_for_pool']} parked for a pool, "
        f"p99 {k['event_to_dispatch_p99_ms'] or 0:.0f} ms; slow-consumer disconnects "
        f"{k['slow_consumer_disconnects'] or 'none'}",
        flush=True,
    )


def _print_alone(size: int, a: dict[str, Any]) -> None:
    print(
        f"  {size:>7,}: a fresh replica alone: ready {_s(a['ready_s'])} after its start (limit "
        f"{a['limit_s']:.0f} s), {a['tracked'] or 0:,} rooms, {a['rss_kb_per_room'] or 0:.2f} kB/room, "
        f"{a['slow_consumer_disconnects']} slow-consumer disconnects",
        flush=True,
    )


def _print_startup(size: int, row: dict[str, Any]) -> None:
    t = row["alone_terminal"]
    print(
        f"  {size:>7,}: with {row['terminal_records']:,} terminal records as well: ready {_s(t['ready_s'])} "
        f"(limit {t['limit_s']:.0f} s), {t['slow_consumer_disconnects']} slow-consumer disconnects, "
        f"{row['terminal_extra_msgs'] or 0:+,} messages to the replica, "
        f"{row['terminal_extra_cpu_s'] or 0:+.2f} s CPU",
        flush=True,
    )


# ------------------------------------------------------------------------------------------------
# the section
# ------------------------------------------------------------------------------------------------


def _every(values: list[bool | None]) -> bool | None:
    if any(v is False for v in values):
        return False
    return None if not values or any(v is None for v in values) else True


def goals(rows: list[dict[str, Any]]) -> dict[str, bool | None]:
    """Each part of issue 15's goal 2 over what the sizes measured (None: not measured). A part
    measured at no size is None; a size that stopped early counts for the parts it measured."""

    def within(x: float | None, limit: float) -> bool | None:
        return None if x is None else x <= limit

    three = [r["three"] for r in rows if "three" in r]
    kills = [r["kill"] for r in rows if "kill" in r]
    both = [r for r in rows if all(k in r for k in ("kill", "join", "term", "final_speaking"))]
    terminal = [r for r in rows if "terminal_replayed" in r]
    return {
        "share": _every([within(t["max_abs_deviation"], SHARE_GOAL) for t in three]),
        "takeover": _every([k["takeover_s"] is not None and k["takeover_s"] <= MEMBER_TTL_S for k in kills]),
        "exactly_once": _every(
            [
                bool(
                    r["kill"]["exactly_once"]
                    and r["join"]["exactly_once"]
                    and r["term"]["exactly_once"]
                    and r["moved_writes"] == 0
                    and r["final_speaking"] == r["live_rooms"]
                )
                for r in both
            ]
        ),
        "memory": _every([within(t["rss_kb_per_room_max"], MEMORY_GOAL_KB) for t in three]),
        "terminal": _every(
            [None if r["terminal_replayed"] is None else not r["terminal_replayed"] for r in terminal]
        ),
    }


async def sharing(
    work: Path, sizes: tuple[int, ...], terminal: int, phase_s: float, budget_s: float
) -> dict[str, Any]:
    budget = Budget(budget_s)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for n, size in enumerate(sizes):
        if n and budget.left() < SIZE_MIN_LEFT_S:
            notes.append(
                f"{size:,} live rooms: not run ({budget.left():.0f} s of the section's {budget_s:.0f} s "
                f"budget left, {SIZE_MIN_LEFT_S:.0f} s needed)."
            )
            continue
        # Terminal records at the first size only: their start-up is the slow part.
        row: dict[str, Any] = {"live_rooms": size, "terminal_records": 0 if n else terminal, "notes": []}
        rows.append(row)
        t0 = time.monotonic()
        try:
            await _size(work, size, row["terminal_records"], phase_s, budget, row)
        except Exception as exc:  # recorded with what was measured; the next size still runs
            row["error"] = f"{type(exc).__name__}: {exc}"
            print(f"  {size:>7,} live rooms: ERROR {row['error'][:500]}", flush=True)
        row["wall_s"] = time.monotonic() - t0
        notes += row["notes"]
    met = goals(rows)
    return {
        "sizes": list(sizes),
        "replicas": REPLICAS,
        "member_ttl_s": MEMBER_TTL_S,
        "event_rate": EVENT_RATE,
        "phase_s": phase_s,
        "signal_after_s": SIGNAL_AFTER_S,
        "poll_s": POLL_S,
        "terminal_records": terminal,
        "alone_limit_s": ALONE_LIMIT_S,
        "jobs_per_worker": JOBS_PER_WORKER,
        "share_goal": SHARE_GOAL,
        "memory_goal_kb": MEMORY_GOAL_KB,
        "budget_s": budget_s,
        "rows": rows,
        "goals": met,
        "goal_met": _every(list(met.values())),
        "notes": notes,
    }


async def run(work: Path, quick: bool = False) -> dict[str, Any]:
    if quick:
        return await sharing(work, QUICK_SIZES, QUICK_TERMINAL, QUICK_PHASE_S, BUDGET_S)
    return await sharing(work, SIZES, TERMINAL, PHASE_S, BUDGET_S)
