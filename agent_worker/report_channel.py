"""The local channel from a job (a thread or a process of its own) to its worker's report queue.

Jobs never talk to NATS: the worker process owns the one NATS connection, the bounded buffer for
outages and the ``pending_reports`` count in its heartbeat. A Unix socket works the same for the
thread and the process executor (the process executor pickles the entrypoint, so no in-memory
object can be shared). One JSON line per report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.messages import AgentStatus

log = logging.getLogger(__name__)

_LINE_LIMIT = 256 * 1024
SEND_TIMEOUT_S = 5.0


class JobReport(BaseModel):
    """A status and the W3C trace context (``traceparent``/``tracestate``) it belongs to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: AgentStatus
    trace: dict[str, str]
    # The region whose status stream takes it (the dispatch's ``state_region``); None: the shared cell.
    state_region: str | None = None


class ReportClient:
    """Job side. Connects on first use; one writer at a time."""

    def __init__(self, socket_path: str) -> None:
        self._path = socket_path
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def send(self, report: JobReport) -> None:
        line = report.model_dump_json().encode() + b"\n"
        async with self._lock, asyncio.timeout(SEND_TIMEOUT_S):
            if self._writer is None or self._writer.is_closing():
                _, self._writer = await asyncio.open_unix_connection(self._path)
            self._writer.write(line)
            await self._writer.drain()

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._writer.wait_closed()


class ReportServer:
    """Worker side: hands every well-formed report to ``deliver`` (the bounded queue)."""

    def __init__(self, socket_path: Path, deliver: Callable[[JobReport], None]) -> None:
        self._path = socket_path
        self._deliver = deliver
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(
            self._on_client, path=str(self._path), limit=_LINE_LIMIT
        )

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    self._deliver(JobReport.model_validate_json(line))
                except ValidationError as exc:
                    log.error("dropped a malformed job report: %s", exc.errors(include_url=False)[:3])
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("job report channel broke: %s", exc)
        finally:
            writer.close()
