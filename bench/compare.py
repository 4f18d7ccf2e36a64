"""Measure 3 — time to agent joined and to first audio: Switchboard path vs LiveKit's automatic dispatch.

Method: one livekit-server, one nats-server, the orchestrator as a subprocess, and two worker
processes started the same way (``bench.worker_shim``: the same AgentServer settings, job wrapper
and default speaking agent, thread executor, capacity 4):

- ``sb``: pool ``eu-central-a`` under its agent_name (explicit dispatch only); a room gets its
  agent through Switchboard: ``RoomCreated`` on NATS → orchestrator → CreateDispatch;
- ``auto``: the same worker registered with an **empty agent_name** (LiveKit's built-in automatic
  dispatch: a job for every new room; it accepts rooms named ``cmp-auto-*`` and rejects the rest).

Per room, for both paths: the driver creates the room with the server API (t0 = the room's
``creation_time_ms`` as stamped by the server); on the ``sb`` path it then publishes
``RoomCreated`` at once, as a backend that creates rooms would; a listener (LiveKit rtc SDK)
joins right away. *Joined* = the agent participant's ``joined_at`` as stamped by the server and
seen by the listener; *first audio* = the listener's wall clock at the first audio frame from
the agent with RMS ≥ 0.01. Rooms run one at a time, the two paths interleaved A-B-B-A; the first
rooms of each path are warm-up and not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any

from livekit import api as lkapi
from nats.js.errors import KeyNotFoundError

from bench.common import (
    Orchestrator,
    TimedListener,
    Worker,
    livekit_api,
    livekit_server,
    nats_client,
    nats_server,
    summary,
    write_config,
)
from orchestrator.records import RoomRecord
from orchestrator.store import open_bucket, room_key
from shared import bus
from shared.messages import RoomCreated

PATHS = ("sb", "auto")


async def one_room(lk: Any, api: lkapi.LiveKitAPI, js: Any, kv: Any, path: str, i: int) -> dict[str, Any]:
    name = f"cmp-{path}-{i}"
    room = await api.room.create_room(lkapi.CreateRoomRequest(name=name, empty_timeout=30))
    created_ms = room.creation_time_ms or room.creation_time * 1000
    if path == "sb":
        await bus.publish_room_created(js, RoomCreated(room=name, sid=room.sid, region="eu-central"))
    listener = TimedListener(lk, name)
    out: dict[str, Any] = {"room": name, "path": path}
    try:
        await listener.connect()
        out["listener_connected_s"] = time.time() - created_ms / 1000
        try:
            async with asyncio.timeout(20):
                await listener.heard.wait()
        except TimeoutError:
            out["error"] = "no audible agent within 20 s"
        agents = list(listener.agent_joined_ms)
        out["agents"] = len(agents)
        if agents:
            agent = agents[0]
            out["joined_s"] = (listener.agent_joined_ms[agent] - created_ms) / 1000
            out["agent_seen_s"] = listener.agent_seen[agent] - created_ms / 1000
            heard = listener.first_audible.get(agent)
            out["first_audio_s"] = heard - created_ms / 1000 if heard else None
    finally:
        await listener.close()
    if path == "sb":
        with contextlib.suppress(KeyNotFoundError):
            entry = await kv.get(room_key(name))
            rec = RoomRecord.model_validate_json(entry.value)
            if rec.dispatched_at:
                out["event_to_dispatched_s"] = rec.dispatched_at - rec.received_at
                out["created_to_dispatched_s"] = rec.dispatched_at - created_ms / 1000
    with contextlib.suppress(Exception):
        await api.room.delete_room(lkapi.DeleteRoomRequest(room=name))
    return out


async def run(work: Path, quick: bool = False) -> dict[str, Any]:
    rooms = 6 if quick else 50
    warmup = 1 if quick else 2
    config = write_config(work / "compare" / "switchboard.yaml", match="cmp-sb-*")
    results: list[dict[str, Any]] = []
    with livekit_server(work, "livekit-compare") as lk, nats_server(work, "nats-compare") as ns:
        sb = Worker(lk, ns.url, work / "compare-sb", "eu-central-a", capacity=4)
        auto = Worker(
            lk,
            ns.url,
            work / "compare-auto",
            "auto-baseline",
            agent="bench-baseline",
            capacity=4,
            extra_env={"BENCH_AUTO_DISPATCH_PREFIX": "cmp-auto-"},
        )
        orch = Orchestrator(work / "compare", config, ns.url, lk.http_url, lk.api_key, lk.api_secret)
        try:
            await asyncio.gather(asyncio.to_thread(sb.start), asyncio.to_thread(auto.start))
            await asyncio.to_thread(orch.start, 90.0)
            async with nats_client(ns.url) as nc, livekit_api(lk) as api:
                js = nc.jetstream()
                kv = await open_bucket(js)
                for i in range(warmup + rooms):
                    order = PATHS if i % 2 == 0 else PATHS[::-1]  # A B B A ...
                    for path in order:
                        try:
                            r = await one_room(lk, api, js, kv, path, i)
                        except Exception as exc:  # one bad room is a failure to count, not the end
                            r = {
                                "room": f"cmp-{path}-{i}",
                                "path": path,
                                "error": f"{type(exc).__name__}: {exc}",
                            }
                        r["warmup"] = i < warmup
                        results.append(r)
                        await asyncio.sleep(0.3)  # the agent leaves the deleted room before the next one
                    if (i + 1) % 10 == 0:
                        print(f"  {i + 1}/{warmup + rooms} room pairs", flush=True)
        finally:
            await asyncio.to_thread(orch.stop)
            await asyncio.gather(asyncio.to_thread(sb.stop), asyncio.to_thread(auto.stop))
    out: dict[str, Any] = {"rooms_per_path": rooms, "warmup_per_path": warmup, "rooms": results}
    for path in PATHS:
        counted = [r for r in results if r["path"] == path and not r["warmup"]]
        out[path] = {
            "joined_s": summary([r["joined_s"] for r in counted if r.get("joined_s") is not None]),
            "first_audio_s": summary(
                [r["first_audio_s"] for r in counted if r.get("first_audio_s") is not None]
            ),
            "agent_seen_s": summary(
                [r["agent_seen_s"] for r in counted if r.get("agent_seen_s") is not None]
            ),
            "failures": sum(1 for r in counted if r.get("error") or r.get("agents") != 1),
            "double_agents": sum(1 for r in counted if (r.get("agents") or 0) > 1),
        }
    sb_rooms = [r for r in results if r["path"] == "sb" and not r["warmup"]]
    out["sb"]["event_to_dispatched_s"] = summary(
        [r["event_to_dispatched_s"] for r in sb_rooms if r.get("event_to_dispatched_s") is not None]
    )
    out["sb"]["created_to_dispatched_s"] = summary(
        [r["created_to_dispatched_s"] for r in sb_rooms if r.get("created_to_dispatched_s") is not None]
    )
    for metric in ("joined_s", "first_audio_s"):
        a, b = out["sb"][metric]["p50"], out["auto"][metric]["p50"]
        out[f"ratio_of_medians_{metric[:-2]}"] = a / b if a and b else None
    # Paired view: each sb room against the auto room of the same pair index.
    pairs = []
    for i in range(warmup, warmup + rooms):
        s = next((r for r in results if r["path"] == "sb" and r["room"].endswith(f"-{i}")), None)
        a = next((r for r in results if r["path"] == "auto" and r["room"].endswith(f"-{i}")), None)
        if s and a and s.get("first_audio_s") and a.get("first_audio_s"):
            pairs.append(s["first_audio_s"] - a["first_audio_s"])
    out["paired_first_audio_diff_s_median"] = statistics.median(pairs) if pairs else None
    return out
