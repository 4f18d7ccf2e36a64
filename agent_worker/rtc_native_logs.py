"""livekit rtc's native logs stay native: a process's idle rooms must not cost it the GIL.

livekit rtc (1.1.21, and 1.2.1 alike) sets its Rust FFI up with ``capture_logs``: every log record
of every level then crosses into Python, one callback per record, decoded on a Rust thread while it
holds the GIL, only for Python to drop the DEBUG and TRACE ones. An idle room makes about 250 a
second (libwebrtc lists the host's networks again and again at DEBUG, the signalling socket logs
its frames at TRACE). Measured with the SDK alone, rooms connected and idle in one process: 20
rooms cost 23 % of a core with capture and 8 % without, 40 rooms 65 % and 10 %. In the 200-room
drills (two processes of 50 rooms per pool) that starved the workers: connects hit their signal
timeouts, jobs' loops missed the FFI's 15 s deadline ("timed out waiting for
ReadyForRoomEventRequest"), and the FFI panic took whole worker processes down.

So once the process's FFI client is made, it is set up again with capture off. The C entry point
``livekit_ffi_initialize`` only replaces the FFI server's config (callback and capture flag), and
the same callback is passed, so room events and FFI panics arrive as before. Rust's own logger
then writes to stderr, filtered by ``RUST_LOG`` (read when the client is made): ``warn`` unless the
environment sets it, so connect retries and errors are still seen.
"""

from __future__ import annotations

import os
import threading

from livekit.rtc import _ffi_client
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc.version import __version__ as rtc_version

DEFAULT_RUST_LOG = "warn"

# Process-wide by necessity, as the FFI client itself (see connect_gate.py).
_LOCK = threading.Lock()
_QUIET = threading.Event()  # this process's FFI client is set up without capture


def quiet_ffi_client() -> FfiClient:
    """The process's FFI client (made now if need be), with log capture off. Idempotent; safe from
    any thread. Call it before the process's first room connect to have ``RUST_LOG`` apply."""
    with _LOCK:
        os.environ.setdefault("RUST_LOG", DEFAULT_RUST_LOG)
        client: FfiClient = FfiClient.instance
        if not _QUIET.is_set():
            # Private in 1.1.21: tests/integration/test_rtc_native_logs.py fails if it moves.
            client._ffi_lib.livekit_ffi_initialize(
                _ffi_client.ffi_event_callback, False, b"python", rtc_version.encode("ascii")
            )
            _QUIET.set()
        return client
