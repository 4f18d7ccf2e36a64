"""livekit rtc's Rust logs stay in Rust once the worker makes the FFI client (rtc_native_logs.py).

Each case runs in a fresh interpreter: the FFI client is process-wide, and this one's may already
have been made by another test's listener.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from devstack.listener import join_token
from devstack.livekit_server import LiveKitServer

pytestmark = pytest.mark.integration

# Connects one room and stays 2 s; prints how many log records reached Python's "livekit" logger
# from the Rust side, and the FFI's connect result (events still arrive with capture off).
SCRIPT = textwrap.dedent(
    """
    import asyncio, json, logging, sys
    from livekit import rtc
    quiet, url, token = sys.argv[1] == "quiet", sys.argv[2], sys.argv[3]
    records = []
    class Count(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
    logging.getLogger("livekit").addHandler(Count())
    logging.getLogger("livekit").setLevel(logging.DEBUG)
    if quiet:
        from agent_worker.rtc_native_logs import quiet_ffi_client
        quiet_ffi_client()
    async def main():
        room = rtc.Room()
        await room.connect(url, token)
        connected = room.isconnected()
        await asyncio.sleep(2)
        await room.disconnect()
        return connected
    connected = asyncio.run(main())
    native = [m for m in records if "::" in m.split(" - ")[0]]  # "target:line:module - message"
    print(json.dumps({"connected": connected, "native_records": len(native)}))
    """
)


def _run(livekit_server: LiveKitServer, mode: str, room: str) -> tuple[dict[str, object], str]:
    token = join_token(livekit_server, room, f"probe-{mode}")
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, livekit_server.ws_url, token],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_the_worker_keeps_rtc_debug_logs_out_of_python(livekit_server: LiveKitServer) -> None:
    captured, _ = _run(livekit_server, "captured", "rtc-logs-captured")
    quiet, stderr = _run(livekit_server, "quiet", "rtc-logs-quiet")
    # The control: the SDK's own set-up forwards Rust's records into Python (INFO and up reach
    # the logger; DEBUG and TRACE are decoded, then dropped, which is the cost).
    assert captured == {"connected": True, "native_records": captured["native_records"]}
    assert int(str(captured["native_records"])) > 0
    # Set up again without capture: the room still connects (events still arrive), and no record
    # crosses; RUST_LOG=warn keeps Rust's INFO lines off stderr too.
    assert quiet == {"connected": True, "native_records": 0}
    assert "connecting to ws://" not in stderr
