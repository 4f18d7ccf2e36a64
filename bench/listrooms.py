"""Measure 8 — ListRooms: what one anti-entropy resync pass (issue 14) costs LiveKit and us.

Method: one real livekit-server on loopback. Rooms are created with CreateRoom (``empty_timeout``
1 h, so they stay; 50 requests in flight) up to 100, then 1,000, then 10,000 live rooms. At each size:
livekit-server's idle CPU over 2 s (this also lets it settle), then
``room.list_rooms(ListRoomsRequest())`` (livekit-api, as the resync calls it) back to back for at
least 10 calls and 2 s. Per call: wall time, our process's CPU (``time.process_time``: JWT, HTTP,
protobuf decode) and livekit-server's CPU (utime + stime from ``/proc/<pid>/stat`` over the batch,
minus its idle rate, divided by the calls). One raw Twirp request gives the HTTP body as sent
(Content-Length; the server does not compress it) beside
``len(ListRoomsResponse.SerializeToString())``, and the decode of that body, alone and with a walk
of every room's name, sid and creation time (what the resync reads at the least), is timed in a
loop. At every size the filtered call the dispatch path makes,
``ListRoomsRequest(names=[one room])``, is measured the same way. Every phase is bounded in time; a size the
server could not reach in time is measured at the rooms it had and says so.

"Cost of a pass" = livekit-server CPU per unfiltered call + ours (the call + the walk); its share
of one core at a 5 s interval = cost / 5 s. The fit cost ≈ a + b·rooms over the sizes gives the
room count where a 5 s pass reaches 2 % of a core, and the interval that keeps it at 2 % beyond
(interval = cost / 0.02).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from livekit import api as lkapi

from bench.common import cpu_seconds, livekit_server, pct

SIZES = (100, 1000, 10_000)
QUICK_SIZES = (50, 300)
CREATE_CONCURRENCY = 50
EMPTY_TIMEOUT_S = 3600
CREATE_BUDGET_S = 110.0  # all CreateRoom calls of the run together
IDLE_WINDOW_S = 2.0
BATCH_MIN_CALLS = 10
BATCH_MIN_S = 2.0
BATCH_MAX_S = 20.0
INTERVAL_S = 5.0
CORE_SHARE_TARGET = 0.02


def _rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


async def _create(api: lkapi.LiveKitAPI, names: list[str], deadline: float) -> tuple[list[str], int]:
    """CreateRoom for ``names``, ``CREATE_CONCURRENCY`` at once, none started after ``deadline``
    (monotonic). Returns (the rooms created, errors)."""
    queue = iter(names)
    created: list[str] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for name in queue:
            if time.monotonic() > deadline:
                return
            try:
                await api.room.create_room(lkapi.CreateRoomRequest(name=name, empty_timeout=EMPTY_TIMEOUT_S))
                created.append(name)
            except Exception:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))
    return created, errors


async def _idle_cpu_per_s(pid: int) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(IDLE_WINDOW_S)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


async def _batch(
    api: lkapi.LiveKitAPI, pid: int, request: lkapi.ListRoomsRequest, idle: float
) -> dict[str, Any]:
    """Back-to-back calls (≥ BATCH_MIN_CALLS and ≥ BATCH_MIN_S, ≤ BATCH_MAX_S): per-call figures."""
    walls: list[float] = []
    client: list[float] = []
    rooms = set()
    server0, start = cpu_seconds(pid), time.monotonic()
    while len(walls) < BATCH_MIN_CALLS or time.monotonic() - start < BATCH_MIN_S:
        if walls and time.monotonic() - start > BATCH_MAX_S:
            break
        c0, t0 = time.process_time(), time.perf_counter()
        resp = await api.room.list_rooms(request)
        walls.append(time.perf_counter() - t0)
        client.append(time.process_time() - c0)
        rooms.add(len(resp.rooms))
    elapsed = time.monotonic() - start
    server = cpu_seconds(pid) - server0
    calls = len(walls)
    wall_ms = [w * 1000 for w in walls]
    return {
        "calls": calls,
        "rooms_listed": sorted(rooms),
        "batch_s": elapsed,
        "wall_ms_p50": pct(wall_ms, 50),
        "wall_ms_p95": pct(wall_ms, 95),
        "wall_ms_max": max(wall_ms),
        "client_cpu_ms": 1000 * sum(client) / calls,
        "server_cpu_ms_gross": 1000 * server / calls,
        "server_cpu_ms": 1000 * max(server - idle * elapsed, 0.0) / calls,
        "server_busy": server / elapsed,  # cores' worth of livekit-server CPU during the batch
    }


async def _raw(http: aiohttp.ClientSession, lk: Any, request: lkapi.ListRoomsRequest) -> dict[str, Any]:
    """One Twirp ListRooms request by hand: the body as it came over HTTP, then its decode alone."""
    token = (
        lkapi.AccessToken(lk.api_key, lk.api_secret).with_grants(lkapi.VideoGrants(room_list=True)).to_jwt()
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/protobuf"}
    url = f"{lk.http_url}/twirp/livekit.RoomService/ListRooms"
    async with http.post(url, data=request.SerializeToString(), headers=headers) as resp:
        resp.raise_for_status()
        body = await resp.read()
        length = resp.headers.get("Content-Length")
        encoding = resp.headers.get("Content-Encoding")
    parsed = lkapi.ListRoomsResponse.FromString(body)
    reps = max(3, min(200, 200_000 // max(len(parsed.rooms), 1)))
    c0 = time.process_time()
    for _ in range(reps):
        lkapi.ListRoomsResponse.FromString(body)
    decode = (time.process_time() - c0) / reps
    c0 = time.process_time()
    for _ in range(reps):
        walked = {r.name: (r.sid, r.creation_time) for r in lkapi.ListRoomsResponse.FromString(body).rooms}
    decode_walk = (time.process_time() - c0) / reps
    return {
        "http_body_bytes": len(body),
        "content_length": int(length) if length else None,
        "content_encoding": encoding,
        "serialized_bytes": len(parsed.SerializeToString()),
        "bytes_per_room": len(body) / len(parsed.rooms) if parsed.rooms else None,
        "decode_ms": decode * 1000,
        "decode_and_walk_ms": decode_walk * 1000,
        "walked_rooms": len(walked),
    }


def _fit(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """cost_ms ≈ a + b·rooms (least squares over the sizes), and what it says about the interval."""
    pts = [(r["rooms"], r["pass_cpu_ms"]) for r in rows if r["rooms"] > 0]
    if len(pts) < 2:
        return None
    x = np.asarray([p[0] for p in pts], dtype=float)
    y = np.asarray([p[1] for p in pts], dtype=float)
    b, a = np.polyfit(x, y, 1)
    budget_ms = CORE_SHARE_TARGET * INTERVAL_S * 1000
    rooms_at_target = (budget_ms - a) / b if b > 0 else None
    return {
        "intercept_ms": float(a),
        "ms_per_1000_rooms": float(b) * 1000,
        "target_core_share": CORE_SHARE_TARGET,
        "interval_s": INTERVAL_S,
        "rooms_at_target": float(rooms_at_target) if rooms_at_target and rooms_at_target > 0 else None,
        # interval that keeps the pass at the target share: cost / target, never below INTERVAL_S
        "interval_s_at": {
            str(n): max(INTERVAL_S, (a + b * n) / 1000 / CORE_SHARE_TARGET)
            for n in (10_000, 20_000, 50_000, 100_000)
        },
    }


async def _size(
    api: lkapi.LiveKitAPI,
    http: aiohttp.ClientSession,
    lk: Any,
    names: list[str],
    target: int,
    deadline: float,
) -> dict[str, Any]:
    """Create rooms up to ``target`` (none after ``deadline``), then measure the full and the
    filtered call at the rooms there are."""
    pid = lk.process.pid
    want = [f"lr-{i}" for i in range(len(names), target)]
    t0 = time.monotonic()
    made, errors = await _create(api, want, deadline)
    create_s = time.monotonic() - t0
    names += made
    listed = len((await api.room.list_rooms(lkapi.ListRoomsRequest())).rooms)
    idle = await _idle_cpu_per_s(pid)
    row: dict[str, Any] = {
        "target": target,
        "rooms": listed,
        "created": len(made),
        "create_errors": errors,
        "create_s": create_s,
        "create_per_s": len(made) / create_s if made and create_s > 0 else None,
        "server_rss_mb": _rss_mb(pid),
        "server_idle_cores": idle,
        **await _batch(api, pid, lkapi.ListRoomsRequest(), idle),
        **await _raw(http, lk, lkapi.ListRoomsRequest()),
    }
    # Ours per pass: the call (JWT, HTTP, decode) and reading every room's name, sid, creation time.
    row["client_pass_cpu_ms"] = row["client_cpu_ms"] + row["decode_and_walk_ms"] - row["decode_ms"]
    row["pass_cpu_ms"] = row["server_cpu_ms"] + row["client_pass_cpu_ms"]
    row["core_share_at_5s"] = row["pass_cpu_ms"] / 1000 / INTERVAL_S
    if names:
        one = names[len(names) // 2]
        request = lkapi.ListRoomsRequest(names=[one])
        row["filtered"] = {
            "room": one,
            **await _batch(api, pid, request, idle),
            **await _raw(http, lk, request),
        }
    return row


async def run(work: Path, quick: bool = False) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else SIZES
    rows: list[dict[str, Any]] = []
    names: list[str] = []
    notes: list[str] = []
    deadline = time.monotonic() + (40.0 if quick else CREATE_BUDGET_S)
    with livekit_server(work, "livekit-listrooms") as lk:
        assert lk.process is not None and lk.process.pid is not None
        rss_empty = _rss_mb(lk.process.pid)
        timeout = aiohttp.ClientTimeout(total=60)
        api = lkapi.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret, timeout=timeout)
        http = aiohttp.ClientSession(timeout=timeout)
        try:
            for target in sizes:
                row = await _size(api, http, lk, names, target, deadline)
                rows.append(row)
                f = row.get("filtered", {})
                print(
                    f"  {row['rooms']:>6} rooms (+{row['created']} in {row['create_s']:.1f} s): ListRooms "
                    f"p50 {row['wall_ms_p50']:.1f} / p95 {row['wall_ms_p95']:.1f} ms, "
                    f"{row['http_body_bytes']:,} B; CPU/call ours {row['client_pass_cpu_ms']:.2f} ms, "
                    f"livekit {row['server_cpu_ms']:.2f} ms ({row['calls']} calls, livekit idle "
                    f"{row['server_idle_cores']:.3f} cores, RSS {row['server_rss_mb'] or 0:.0f} MB); "
                    f"names=[one]: p50 {f.get('wall_ms_p50') or 0:.2f} ms, livekit "
                    f"{f.get('server_cpu_ms') or 0:.2f} ms",
                    flush=True,
                )
                if row["rooms"] < target:
                    notes.append(
                        f"{target:,} rooms not reached: the CreateRoom budget ({CREATE_BUDGET_S:.0f} s for "
                        f"the run) ran out at {row['rooms']:,} rooms ({row['create_errors']} errors); "
                        "measured there."
                    )
                    break
        finally:
            await http.close()
            await api.aclose()
    return {
        "sizes": list(sizes),
        "create_concurrency": CREATE_CONCURRENCY,
        "empty_timeout_s": EMPTY_TIMEOUT_S,
        "server_rss_mb_empty": rss_empty,
        "rows": rows,
        "fit": _fit(rows),
        "notes": notes,
    }
