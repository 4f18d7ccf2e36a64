"""Measure 9 — live rooms: what the rooms a replica already tracks cost each new event.

Method: nats-server, the Twirp stand-in as LiveKit (it answers at once and timestamps each
CreateDispatch; it has every room it is asked about, so each event's room exists) and one pool,
``eu-central-a``, of stand-in workers heartbeating over NATS. A realistic ``speaking`` record is
made by taking one room through a real ``switchboard orchestrator`` replica (Measure 7's template);
copies of it are written straight into the KV bucket, each with its own room name, dispatch id and
agent identity — 0, then 10,000, then 100,000 live rooms. Their jobs are listed in the pool's
heartbeats as a running pool's workers list them (1,000 jobs a worker, the most a beat may carry),
and each copy names the worker listing it, so none counts as a reservation and none fails over; the
workers' beats are spread over the heartbeat interval, as independent workers' are. For each size a
fresh replica (INFO logs, as in production) is started and measured once its room index has synced
(/readyz): RSS and PSS of its process group, and its idle CPU over 5 s (after 3 s to settle). After
a warm-up of 50 events at 50/s (not measured: a fresh replica's first dispatches pay for
connections and first writes), a separate publisher process sends ``RoomCreated`` at 100 events/s
for 20 s (open loop, ``bench/publisher.py``); latency = the wall time just before each publish →
the stand-in receiving that room's CreateDispatch (the ListRooms check before it and both HTTP hops
included). Dispatched rooms become jobs in the heartbeats within a beat, as a worker taking the job
would list it, so about one beat's worth of rooms is in flight (~100 at 100/s). CPU per room
dispatched = the replica's CPU seconds over the event phase (publisher start → the last
CreateDispatch seen, polled every 0.25 s) / rooms dispatched (gross; "net" subtracts the idle rate
over the same time); the CPU of every other process and of the whole machine is sampled over the
same phase. Between sizes the events' records are purged and the rooms stream emptied, so every
size starts with exactly its live rooms. The resync is off (the copies are rooms the stand-in never
created; a pass's own cost is Measure 8).

A replica that cannot keep up is given a bounded time to drain; events still without a
CreateDispatch then count at the time they had waited, so the percentiles of such a size are lower
bounds (marked ≥). Goal (issue 15, goal 1): p99 with 100,000 live rooms ≤ 1.2 × p99 with 0, same
run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError

from bench.common import (
    STANDIN_TIMINGS,
    Orchestrator,
    StandIn,
    StandInPool,
    cpu_seconds,
    nats_client,
    nats_server,
    pct,
    write_config,
)
from bench.footprint import TEMPLATE, _measure_replica, _template
from bench.overhead import run_publisher
from devstack.probe import http_get
from orchestrator.records import RoomRecord
from orchestrator.store import open_bucket, room_key
from shared import subjects

_SECRET = "bench-standin-secret-0123456789abcdef"
POOL = "eu-central-a"
RATE = 100.0
SIZES = (0, 10_000, 100_000)
QUICK_SIZES = (0, 2_000)
SECONDS = 60.0
# The event phase is also cut into this many equal windows, each with its own p99: a machine
# hiccup (a 2-core VM shared with other jobs) moves one window's p99, live rooms move them all.
WINDOWS = 3
QUICK_SECONDS = 5.0
DRAIN_S = 90.0  # after the last event, for the CreateDispatches still to come
QUICK_DRAIN_S = 30.0
LOAD_LIMIT_S = 300.0  # writing the live rooms' records into KV, per size
JOBS_PER_WORKER = 1000  # PoolHeartbeat.jobs holds at most 1,000 ids
GOAL_RATIO = 1.2
WARMUP_EVENTS = 50  # per size, before the measured events, at WARMUP_RATE
WARMUP_RATE = 50.0
WARMUP_WAIT_S = 15.0


@dataclass
class Worker(StandInPool):
    """One heartbeating stand-in worker of the pool; ``worker_id`` names it (devstack's stand-in
    pool is always ``<pool>-w1``)."""

    worker_id: str = ""

    @property
    def worker(self) -> str:
        return self.worker_id or f"{self.pool}-w1"


# ------------------------------------------------------------------------------------------------
# pure helpers
# ------------------------------------------------------------------------------------------------


def live_room(i: int) -> str:
    return f"fp-{i:07d}"


def live_dispatch_id(i: int) -> str:
    return f"AD_live{i:09d}"


def live_worker(i: int) -> str:
    return f"{POOL}-live{i // JOBS_PER_WORKER:03d}"


def render_copy(text: str, rec: RoomRecord, i: int) -> str:
    """The template record's JSON as live room ``i``: its own name, dispatch id, agent identity,
    and the worker whose beats list its job."""
    out = text.replace(TEMPLATE, live_room(i))
    if rec.dispatch_id:
        out = out.replace(rec.dispatch_id, live_dispatch_id(i))
    if rec.identity:
        out = out.replace(rec.identity, f"agent-AJ_live{i:09d}")
    if rec.worker:
        out = out.replace(f'"{rec.worker}"', f'"{live_worker(i)}"')
    return out


def latency_stats(t0: dict[str, int], arrivals: dict[str, int], until_ns: int) -> dict[str, Any]:
    """Event → CreateDispatch (ms) over every event in ``t0``: one that has no arrival counts at the
    time it had waited by ``until_ns`` (censored), so with any censored the percentiles are lower
    bounds (``lower_bound``)."""
    done = [(arrivals[k] - t) / 1e6 for k, t in t0.items() if k in arrivals]
    waited = [(until_ns - t) / 1e6 for k, t in t0.items() if k not in arrivals]
    values = done + waited
    return {
        "events": len(t0),
        "dispatched": len(done),
        "censored": len(waited),
        "lower_bound": bool(waited),
        "p50_ms": pct(values, 50),
        "p90_ms": pct(values, 90),
        "p99_ms": pct(values, 99),
        "max_ms": max(values) if values else None,
        "p50_ms_dispatched": pct(done, 50),
        "p99_ms_dispatched": pct(done, 99),
    }


def window_p99s(points: list[tuple[float, float]], seconds: float, windows: int) -> list[float | None]:
    """p99 (ms) of each of ``windows`` equal spans of the event phase; ``points`` are (s since the
    first event, ms to CreateDispatch, or waited so far for an event never dispatched)."""
    span = seconds / windows
    cut = [[ms for t, ms in points if min(int(t // span), windows - 1) == k] for k in range(windows)]
    return [pct(ms, 99) for ms in cut]


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is missing or b is not positive."""
    if a is None or b is None or b <= 0 or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b


def per_room(total: float | None, rooms: int) -> float | None:
    return None if total is None or rooms <= 0 else total / rooms


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def rooms_in_metrics(text: str) -> int | None:
    """Live rooms in the replica's index, from its /metrics (``switchboard_rooms_live``)."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("switchboard_rooms_live") and not line.startswith("#"):
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
    return int(total) if seen else None


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------


async def _load(js: Any, text: str, rec: RoomRecord, start: int, stop: int) -> None:
    for i in range(start, stop):
        await js.publish_async(
            f"$KV.{subjects.ROOMS_BUCKET}.{room_key(live_room(i))}", render_copy(text, rec, i).encode()
        )
    await js.publish_async_completed()


class JobFeeder:
    """Lists each event room's dispatch in an event worker's beats once its record says
    ``dispatched`` (a core-NATS subscription on the KV bucket's subjects), as the worker that took
    the job would."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.prefix = ""
        self.seen: set[str] = set()

    def reset(self, prefix: str) -> None:
        self.prefix = prefix
        self.seen.clear()
        for w in self.workers:
            w.jobs = []
            w.active = 0

    async def on_kv(self, msg: Msg) -> None:
        if not self.prefix or b'"state":"dispatched"' not in msg.data:
            return
        room = msg.subject.rsplit(".", 1)[-1]
        if not room.startswith(self.prefix):
            return
        dispatch_id = json.loads(msg.data).get("dispatch_id")
        if not dispatch_id or dispatch_id in self.seen:
            return
        self.seen.add(dispatch_id)
        for w in self.workers:
            if len(w.jobs) < w.capacity:
                w.jobs.append(dispatch_id)
                w.active = len(w.jobs)
                return


async def _index_size(orch: Orchestrator) -> int | None:
    """The replica's own count of its live rooms (a busy replica's /metrics can take seconds)."""
    url = f"http://127.0.0.1:{orch.http_port}/metrics"
    status, body = await asyncio.to_thread(http_get, url, 15.0)
    return rooms_in_metrics(body.decode(errors="replace")) if status == 200 else None


async def _events(
    orch: Orchestrator,
    standin: StandIn,
    nats_url: str,
    work: Path,
    size: int,
    seconds: float,
    drain_s: float,
    feeder: JobFeeder,
    others: dict[str, int],
) -> dict[str, Any]:
    """Publish the events, wait (bounded) for their CreateDispatches; latency and the replica's CPU
    (and, to read the figures by, every other process's and the whole machine's)."""
    prefix = f"fp-ev{size}-"
    count = int(RATE * seconds)
    feeder.reset(prefix)
    # Warm-up (not measured): a fresh replica's first dispatches pay one-off costs (connections,
    # first writes); a replica that has served for a while has paid them.
    warm = await run_publisher(
        nats_url, "rooms", WARMUP_RATE, WARMUP_EVENTS, f"{prefix}wu", work / f"warmup-{size}.json"
    )
    warm_deadline = time.monotonic() + WARMUP_WAIT_S
    while time.monotonic() < warm_deadline:
        seen = await asyncio.to_thread(standin.arrivals, f"{prefix}wu")
        if all(k in seen for k in warm["t0_ns"]):
            break
        await asyncio.sleep(0.25)
    pids = {"replica": orch.pid, **others, "driver": os.getpid()}
    loadavg = os.getloadavg()[0]
    busy0, cpus0 = machine_busy_s(), {name: cpu_seconds(pid) for name, pid in pids.items()}
    cpu0, t_start = cpus0["replica"], time.monotonic()
    pub = await run_publisher(nats_url, "rooms", RATE, count, prefix, work / f"publisher-{size}.json")
    t0 = {k: int(v) for k, v in pub["t0_ns"].items()}
    deadline = time.monotonic() + drain_s
    arrivals: dict[str, int] = {}
    while True:
        arrivals = await asyncio.to_thread(standin.arrivals, prefix)
        if all(k in arrivals for k in t0) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    until_ns = time.time_ns()
    cpu, phase_s = cpu_seconds(orch.pid) - cpu0, time.monotonic() - t_start
    used = {name: (cpu_seconds(pid) - cpus0[name]) / phase_s for name, pid in pids.items()}
    machine = (machine_busy_s() - busy0) / phase_s
    # cores busy over the phase: each process, the machine, and the rest (the publisher, and
    # whatever else shares the machine)
    cpu_util = {**used, "machine": machine, "rest": machine - sum(used.values())}
    last = max((arrivals[k] for k in t0 if k in arrivals), default=until_ns)
    stats = latency_stats(t0, arrivals, until_ns)
    first = min(t0.values(), default=0)
    samples = sorted(
        ((t - first) / 1e9, (arrivals[k] - t) / 1e6 if k in arrivals else None) for k, t in t0.items()
    )
    return {
        "prefix": prefix,
        "warmup_events": len(warm["t0_ns"]),
        "warmup_dispatched": len(seen),
        "rate": RATE,
        "seconds": seconds,
        "achieved_rate": pub["achieved_rate"],
        "late_starts": pub["late_starts"],
        "publish_errors": pub["error_count"],
        "phase_s": phase_s,
        "last_dispatch_after_first_event_s": (last - min(t0.values())) / 1e9 if t0 else None,
        "cpu_s": cpu,
        "jobs_listed": len(feeder.seen),
        "cpu_util": cpu_util,
        "loadavg_at_events": loadavg,
        **stats,
        # (s since the first event, ms to CreateDispatch or None) per event, in publish order
        "samples": samples,
        "p99_windows_ms": window_p99s(
            [(t, ms if ms is not None else (until_ns - first) / 1e6 - t * 1e3) for t, ms in samples],
            seconds,
            WINDOWS,
        ),
    }


async def _cleanup(js: Any, kv: Any, rooms: list[str]) -> None:
    """Purge the events' records (so the next size starts with exactly its live rooms) and whatever
    events a replica left behind in the rooms stream."""
    for room in rooms:
        with contextlib.suppress(KeyNotFoundError):
            await kv.purge(room_key(room))
    await js.purge_stream(subjects.ROOMS_STREAM)


async def _size(
    work: Path,
    config: Path,
    nats_url: str,
    standin: StandIn,
    size: int,
    seconds: float,
    drain_s: float,
    feeder: JobFeeder,
    others: dict[str, int],
) -> dict[str, Any]:
    orch = Orchestrator(work, config, nats_url, standin.url, "devkey", _SECRET, name=f"orch-{size}")
    row: dict[str, Any] = {"live_rooms": size}
    try:
        row.update(await _measure_replica(orch))
        row["index_rooms"] = await _index_size(orch)
        row.update(await _events(orch, standin, nats_url, work, size, seconds, drain_s, feeder, others))
    finally:
        await asyncio.to_thread(orch.stop)
    return row


def _print(row: dict[str, Any]) -> None:
    ge = "≥ " if row.get("lower_bound") else ""
    mem = (
        f", +{row['rss_kb_per_room']:.1f} kB RSS/room"
        if row.get("rss_kb_per_room") is not None
        else f", RSS {row.get('rss_kb', 0) / 1024:.0f} MB"
    )
    print(
        f"  {row['live_rooms']:>7,} live rooms: event→CreateDispatch p50 {ge}{row['p50_ms']:.2f} / "
        f"p99 {ge}{row['p99_ms']:.2f} ms, {row['dispatched']}/{row['events']} dispatched, "
        f"idle CPU {row['idle_cpu']:.0%}, {row.get('cpu_ms_per_room') or 0:.2f} ms CPU/room{mem}, "
        f"synced in {row['ready_s']:.1f} s",
        flush=True,
    )


async def _start_spread(workers: list[Worker]) -> None:
    """Start the workers one after another across one heartbeat interval, so their beats arrive
    spread over the interval as independent workers' do, not in one burst a second (a beat of
    1,000 job ids costs the replica ~0.3 ms to read)."""
    for w in workers:
        await w.start()
        await asyncio.sleep(w.interval / len(workers))


async def _add_live_workers(nc: Any, workers: list[Worker], size: int) -> None:
    """Beating workers whose jobs are live rooms [0, size), 1,000 a worker (the ones already there kept)."""
    new = []
    for k in range(len(workers), math.ceil(size / JOBS_PER_WORKER)):
        ids = [live_dispatch_id(i) for i in range(k * JOBS_PER_WORKER, min((k + 1) * JOBS_PER_WORKER, size))]
        new.append(
            Worker(
                nc,
                POOL,
                capacity=len(ids),
                active=len(ids),
                jobs=ids,
                worker_id=live_worker(k * JOBS_PER_WORKER),
            )
        )
    workers.extend(new)  # before they start: the section's clean-up stops every one started
    await _start_spread(new)


@dataclass
class LiveRoomsBench:
    """What sections 9 and 10 run on: nats-server, the Twirp stand-in, the pool's event workers
    (the first is <pool>-w1, the worker the template's reports name) and live rooms' workers (added
    by :func:`grow_live_rooms`), and the template record the live rooms are copies of."""

    ns: Any
    standin: StandIn
    nc: Any
    js: Any
    kv: Any
    event_workers: list[Worker]
    live_workers: list[Worker]
    template: bytes
    text: str
    rec: RoomRecord


@contextlib.asynccontextmanager
async def live_rooms_bench(
    work: Path, config: Path, name: str, event_workers: int
) -> AsyncIterator[LiveRoomsBench]:
    async with contextlib.AsyncExitStack() as stack:
        ns = stack.enter_context(nats_server(work, name))
        standin = StandIn(work)
        standin.start()
        stack.callback(standin.stop)
        nc = await stack.enter_async_context(nats_client(ns.url))
        events = [
            Worker(nc, POOL, capacity=JOBS_PER_WORKER, worker_id=f"{POOL}-ev{k}" if k else f"{POOL}-w1")
            for k in range(event_workers)
        ]
        live: list[Worker] = []

        async def stop_workers() -> None:
            for w in events + live:
                await w.stop()

        stack.push_async_callback(stop_workers)
        await _start_spread(events)
        js = nc.jetstream(publish_async_max_pending=4000)
        kv = await open_bucket(js)
        template = await _make_template(work, config, ns.url, standin, js, kv)
        rec = RoomRecord.model_validate_json(template)
        yield LiveRoomsBench(ns, standin, nc, js, kv, events, live, template, template.decode(), rec)


async def grow_live_rooms(
    nc: Any,
    js: Any,
    text: str,
    rec: RoomRecord,
    live_workers: list[Worker],
    loaded: int,
    size: int,
    notes: list[str],
) -> float | None:
    """Live rooms [loaded, size) written into KV, their workers beating first (each record names a
    living worker); the seconds it took, or None (noted) when KV did not take them in time."""
    await _add_live_workers(nc, live_workers, size)
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(LOAD_LIMIT_S):
            await _load(js, text, rec, loaded, size)
    except TimeoutError:
        notes.append(f"{size:,} live rooms: not written into KV within {LOAD_LIMIT_S:.0f} s; not run.")
        return None
    return time.monotonic() - t0


async def _make_template(
    work: Path, config: Path, nats_url: str, standin: StandIn, js: Any, kv: Any
) -> bytes:
    """Measure 7's ``speaking`` record, made by a real replica; then its room and event are removed."""
    first = Orchestrator(work, config, nats_url, standin.url, "devkey", _SECRET, name="orch-template")
    await asyncio.to_thread(first.start, 90.0)
    try:
        template = await _template(js, kv)
    finally:
        await asyncio.to_thread(first.stop)
    await kv.purge(room_key(TEMPLATE))
    await js.purge_stream(subjects.ROOMS_STREAM)
    rec = RoomRecord.model_validate_json(template)
    check = RoomRecord.model_validate_json(render_copy(template.decode(), rec, 0))
    if (check.room, check.dispatch_id, check.worker) != (live_room(0), live_dispatch_id(0), live_worker(0)):
        raise RuntimeError(f"the template record did not render as a live room: {check!r}")
    return template


def _notes(row: dict[str, Any], drain_s: float) -> list[str]:
    size = row["live_rooms"]
    if "error" in row:
        return [f"{size:,} live rooms: {row['error']}"]
    notes = []
    if row["censored"]:
        notes.append(
            f"{size:,} live rooms: the replica fell behind; {row['censored']} of {row['events']} events had "
            f"no CreateDispatch {drain_s:.0f} s after the last event (counted at the time they had waited: "
            "the percentiles are lower bounds)."
        )
    if row.get("index_rooms") is not None and row["index_rooms"] != size:
        notes.append(
            f"{size:,} live rooms: the replica's index held {row['index_rooms']:,} rooms when measured."
        )
    return notes


async def liverooms(work: Path, sizes: tuple[int, ...], seconds: float, drain_s: float) -> dict[str, Any]:
    config = write_config(work / "switchboard.yaml", match="fp-*", resync_interval_s=0, **STANDIN_TIMINGS)
    events = int(RATE * seconds)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    # Event workers: open slots for every event of a size (and the template); the first is
    # <pool>-w1, the worker the template's reports name.
    slots = math.ceil(events / JOBS_PER_WORKER) + 1
    async with contextlib.AsyncExitStack() as stack:
        b = await stack.enter_async_context(live_rooms_bench(work, config, "nats-liverooms", slots))
        ns, standin, nc, js, kv = b.ns, b.standin, b.nc, b.js, b.kv
        event_workers, live_workers, template, text, rec = (
            b.event_workers,
            b.live_workers,
            b.template,
            b.text,
            b.rec,
        )
        feeder = JobFeeder(event_workers)
        sub = await nc.subscribe(f"$KV.{subjects.ROOMS_BUCKET}.*.r.*", cb=feeder.on_kv)
        stack.push_async_callback(sub.unsubscribe)
        others = {
            name: proc.pid
            for name, proc in (("nats", ns.process), ("standin", standin.process))
            if proc is not None and proc.pid is not None
        }
        loaded = 0
        for size in sizes:
            load_s = await grow_live_rooms(nc, js, text, rec, live_workers, loaded, size, notes)
            if load_s is None:
                break
            loaded = size
            try:
                row = await _size(work, config, ns.url, standin, size, seconds, drain_s, feeder, others)
            except Exception as exc:  # recorded; the next size still runs
                row = {"live_rooms": size, "error": f"{type(exc).__name__}: {exc}"}
                print(f"  {size:>7,} live rooms: ERROR {row['error']}", flush=True)
            row.update(load_s=load_s, live_workers=len(live_workers))
            rows.append(row)
            await _cleanup(
                js,
                kv,
                [f"fp-ev{size}-{i}" for i in range(events)]
                + [f"fp-ev{size}-wu{i}" for i in range(WARMUP_EVENTS)],
            )
            notes += _notes(row, drain_s)
            if "error" not in row:
                _derive(row, rows[0])
                _print(row)
    ok = [r for r in rows if "error" not in r]
    base = next((r for r in ok if r["live_rooms"] == 0), None)
    top = max(ok, key=lambda r: r["live_rooms"], default=None)
    ratio_p99 = ratio(top["p99_ms"], base["p99_ms"]) if top and base and top is not base else None
    return {
        "sizes": list(sizes),
        "rate": RATE,
        "seconds": seconds,
        "events_per_size": events,
        "drain_s": drain_s,
        "jobs_per_worker": JOBS_PER_WORKER,
        "template_record_bytes": len(template),
        "rows": rows,
        "ratio_p99": ratio_p99,
        "ratio_p99_rooms": top["live_rooms"] if top else None,
        "ratio_lower_bound": bool(top and top.get("lower_bound")),
        "goal_ratio": GOAL_RATIO,
        "goal_met": None if ratio_p99 is None else ratio_p99 <= GOAL_RATIO,
        "notes": notes,
    }


def _derive(row: dict[str, Any], base: dict[str, Any]) -> None:
    """Per-room figures: CPU per room dispatched (gross, and net of the idle rate), memory per live
    room against the 0-room replica, p99 against it."""
    cpu, idle = row.get("cpu_s"), row.get("idle_cpu")
    row["cpu_ms_per_room"] = per_room(cpu * 1000 if cpu is not None else None, row["dispatched"])
    net = (cpu - idle * row["phase_s"]) * 1000 if cpu is not None and idle is not None else None
    row["cpu_ms_per_room_net"] = per_room(net, row["dispatched"])
    base_ok = base is not row and "error" not in base and base["live_rooms"] == 0
    n = row["live_rooms"]
    row["rss_kb_per_room"] = per_room(row["rss_kb"] - base["rss_kb"], n) if base_ok else None
    row["pss_kb_per_room"] = per_room(row["pss_kb"] - base["pss_kb"], n) if base_ok else None
    row["ratio_p99_vs_0"] = ratio(row["p99_ms"], base["p99_ms"]) if base_ok else None


async def run(work: Path, quick: bool = False) -> dict[str, Any]:
    if quick:
        return await liverooms(work, QUICK_SIZES, QUICK_SECONDS, QUICK_DRAIN_S)
    return await liverooms(work, SIZES, SECONDS, DRAIN_S)
