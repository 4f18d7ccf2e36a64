"""A child server process: started with its log in a file, awaited until ready, always stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar


class MissingBinaryError(RuntimeError):
    """A server binary is not installed; the message says which command installs it."""


class ServerStartError(RuntimeError):
    """A server process exited or did not become ready in time; the message holds its log tail."""


class ServerProcess:
    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # Own process group, so stopping it never leaves a grandchild behind.
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        """Poll ``probe`` (a cheap readiness check) until it answers true; fail with the log tail."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            if probe():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"{self.name} was not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def signal(self, sig: int) -> None:
        if self.running and self.proc is not None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0, force_after: float | None = None) -> None:
        """SIGTERM, and SIGKILL after ``timeout``. ``force_after``: send a second SIGTERM after
        that many seconds (livekit-server treats a second signal as "shut down now")."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                if force_after is not None:
                    try:
                        self.proc.wait(force_after)
                    except subprocess.TimeoutExpired:
                        os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class _Startable(Protocol):
    def start(self) -> None: ...


_S = TypeVar("_S", bound=_Startable)


def start_with_fresh_ports(make: Callable[[int], _S], attempts: int = 3) -> _S:
    """``make(attempt)`` a server and start it; when a port it was given got taken in between (the
    ports are picked free, then bound a moment later, and on a busy machine an outgoing connection
    can land on one), make a new one with new ports and try again."""
    for attempt in range(attempts):
        server = make(attempt)
        try:
            server.start()
            return server
        except ServerStartError as err:
            if "address already in use" not in str(err) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
