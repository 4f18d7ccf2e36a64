"""Paced publisher for the overhead benchmark, in its own process (an outside backend).

    python -m bench.publisher --nats URL --mode rooms|floor --rate R --count N --prefix P --out FILE

Open loop: message ``i`` is published at ``start + i / rate`` whatever happened to the previous
ones (each publish is its own task), so a slow consumer shows up as latency, not as a lower rate.
Writes ``{"t0_ns": {id: wall-clock ns just before the publish call}, "ack_ns": {...}, ...}``.

- ``rooms``: ``RoomCreated`` on ``switchboard.rooms.created`` through ``shared.bus`` (the traced
  producer path a backend uses); the id is the room name.
- ``floor``: the same size of payload on ``bench.floor`` (stream ``BENCH_FLOOR``, created by the
  driver), ``Nats-Msg-Id`` = id: the NATS hop alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import nats
import uvloop

from shared import bus
from shared.codec import encode
from shared.messages import RoomCreated

FLOOR_SUBJECT = "bench.floor"
FLOOR_STREAM = "BENCH_FLOOR"


async def publish_all(
    url: str, mode: str, rate: float, count: int, prefix: str, limit_s: float
) -> dict[str, object]:
    nc = await nats.connect(url, name="bench-publisher", max_reconnect_attempts=2)
    js = nc.jetstream()
    t0: dict[str, int] = {}
    acked: dict[str, int] = {}
    errors: list[str] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        name = f"{prefix}{i}"
        event = RoomCreated(room=name, region="eu-central")
        try:
            if mode == "rooms":
                t0[name] = time.time_ns()
                await bus.publish_room_created(js, event)
            else:
                payload = encode(event)
                t0[name] = time.time_ns()
                await js.publish(FLOOR_SUBJECT, payload, headers={"Nats-Msg-Id": name}, timeout=5)
            acked[name] = time.time_ns()
        except Exception as exc:  # counted and reported; the run goes on
            errors.append(f"{name}: {type(exc).__name__}: {exc}")

    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    deadline = start + limit_s
    late = 0
    for i in range(count):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late += 1
        if loop.time() > deadline:
            errors.append(f"stopped at {i}: time limit {limit_s}s")
            break
        task = asyncio.create_task(one(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
    sent_s = loop.time() - start
    if pending:
        await asyncio.wait(pending, timeout=30)
    await nc.drain()
    return {
        "t0_ns": t0,
        "ack_ns": acked,
        "errors": errors[:20],
        "error_count": len(errors),
        "late_starts": late,
        "achieved_rate": len(t0) / sent_s if sent_s > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nats", required=True)
    parser.add_argument("--mode", choices=("rooms", "floor"), required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--limit-s", type=float, default=60.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = uvloop.run(publish_all(args.nats, args.mode, args.rate, args.count, args.prefix, args.limit_s))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
