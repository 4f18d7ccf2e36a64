"""A LiveKit server-API stand-in for benchmarks: answers every Twirp call at once, records arrivals.

    python -m bench.twirp_standin --port PORT

``CreateDispatch`` answers an ``AgentDispatch`` with a fresh id and records the wall-clock arrival
time (ns) of the first request per room. ``ListRooms`` treats every room it is asked about by
name as existing (the orchestrator asks before each CreateDispatch): it answers one ``Room`` per
name, with a sid fixed per name and the time the name was first seen; an unfiltered
``ListRooms`` (the resync's) lists every room seen so far by name or by CreateDispatch, less those
given to ``DeleteRoom``. Every other method (ListDispatch, DeleteDispatch, RemoveParticipant, ...)
answers an empty message, which the client reads as the method's default response (no
dispatches, no participants). No authentication is checked.

``GET /_bench/arrivals?prefix=P`` returns ``{room: arrival_ns}`` for rooms starting with P;
``GET /_bench/ping`` is the readiness probe. Runs on uvloop, alone in its process, so its own work
never sits on the orchestrator's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import time

import uvloop
from aiohttp import web
from livekit import api as lk

_ids = itertools.count(1)


def make_app() -> web.Application:
    arrivals: dict[str, int] = {}
    counts: dict[str, int] = {}
    rooms: dict[str, lk.Room] = {}  # every room seen (and not deleted), by name

    def room(name: str, now_ns: int) -> lk.Room:
        if name not in rooms:
            rooms[name] = lk.Room(
                name=name,
                sid=f"RM_bench{next(_ids):09d}",
                creation_time=now_ns // 1_000_000_000,
                creation_time_ms=now_ns // 1_000_000,
            )
        return rooms[name]

    async def twirp(request: web.Request) -> web.Response:
        now = time.time_ns()
        method = request.match_info["method"]
        body = await request.read()
        counts[method] = counts.get(method, 0) + 1
        if method == "CreateDispatch":
            req = lk.CreateAgentDispatchRequest.FromString(body)
            arrivals.setdefault(req.room, now)
            reply = lk.AgentDispatch(
                id=f"AD_bench{next(_ids):09d}",
                agent_name=req.agent_name,
                room=req.room,
                metadata=req.metadata,
            )
            payload = reply.SerializeToString()
            room(req.room, now)
        elif method == "ListRooms":
            names = lk.ListRoomsRequest.FromString(body).names
            listed = [room(n, now) for n in names] if names else list(rooms.values())
            payload = lk.ListRoomsResponse(rooms=listed).SerializeToString()
        elif method == "DeleteRoom":
            rooms.pop(lk.DeleteRoomRequest.FromString(body).room, None)
            payload = b""
        else:
            payload = b""  # the default (empty) response message of any method
        return web.Response(body=payload, content_type="application/protobuf")

    async def arrivals_view(request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        return web.json_response({k: v for k, v in arrivals.items() if k.startswith(prefix)})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(counts)

    async def ping(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=1024 * 1024)
    app.add_routes(
        [
            web.post("/twirp/{service}/{method}", twirp),
            web.get("/_bench/arrivals", arrivals_view),
            web.get("/_bench/stats", stats),
            web.get("/_bench/ping", ping),
        ]
    )
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
