"""A real TCP proxy with switchable faults, between a client (the orchestrator) and a real server.

Modes, switched at any time (``proxy.mode = ...``); each applies to new connections, and ``down``
and ``reset`` also cut the open ones:

- ``pass``: bytes flow both ways untouched;
- ``down``: nothing listens (connections are refused), as a stopped server;
- ``reset``: connections are accepted, then reset at once (RST) before a byte is forwarded;
- ``slow``: every chunk the server sends back is held ``delay_s`` first (a server answering slowly);
- ``blackhole``: connections are accepted and requests swallowed; nothing ever comes back.

Counts connections per mode, so a drill can tell how many tries a client made during a fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from typing import Literal

Mode = Literal["pass", "down", "reset", "slow", "blackhole"]


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.delay_s = 2.0
        self.connections: Counter[str] = Counter()
        self._mode: Mode = "pass"
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    async def set_mode(self, mode: Mode, delay_s: float | None = None) -> None:
        if delay_s is not None:
            self.delay_s = delay_s
        self._mode = mode
        if mode in ("down", "reset"):
            self._cut_all()
        if mode == "down":
            await self._close_listener()
        elif self._server is None:
            await self._listen()

    async def __aenter__(self) -> FaultProxy:
        await self._listen()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._close_listener()
        self._cut_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self._server = await asyncio.start_server(self._accept, sock=sock)
        self.port = sock.getsockname()[1]

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            self._server = None

    def _cut_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self._mode
        self.connections[mode] += 1
        if mode in ("reset", "down"):
            _reset(writer)
            return
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if mode == "blackhole":
                while await reader.read(65536):
                    pass
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                _reset(writer)
                return
            self._writers.add(up_writer)
            await asyncio.gather(
                self._pipe(reader, up_writer, hold=False),
                self._pipe(up_reader, writer, hold=True),
                return_exceptions=True,
            )
            self._writers.discard(up_writer)
            with contextlib.suppress(Exception):
                up_writer.close()
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, hold: bool) -> None:
        """Forward ``src`` to ``dst``; answers (``hold``) wait ``delay_s`` while the mode is slow
        (read per chunk, so pooled keep-alive connections follow the mode too)."""
        try:
            while data := await src.read(65536):
                if hold and self._mode == "slow":
                    await asyncio.sleep(self.delay_s)  # the fault itself: hold the answer
                if hold and self._mode == "blackhole":
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if dst.can_write_eof():
                    dst.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, as from a crashed or firewalled server."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(Exception):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
