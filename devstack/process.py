"""A child server process: started with its log in a file, awaited until ready, always stopped.

Also what the loopback server launchers (nats_server, livekit_server, jaeger) share: finding
their binary, and :class:`LoopbackServer` (start into a data dir, stop, kill).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar


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


def cache_dir() -> Path:
    """Where scripts/install-livekit-server and scripts/install-jaeger put the binaries they build."""
    explicit = os.environ.get("SWITCHBOARD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchboard"


def find_binary(name: str, install_hint: str, *places: Path, search_path: bool = True) -> str:
    """The first of ``places`` that exists, else ``name`` on PATH (unless ``search_path`` is off:
    only the pinned build will do); MissingBinaryError naming the install command otherwise."""
    for place in places:
        if place.exists():
            return str(place)
    found = shutil.which(name) if search_path else None
    if found:
        return found
    raise MissingBinaryError(f"{name} is not installed. Install it with: {install_hint}")


class LoopbackServer:
    """A server binary on 127.0.0.1 with its config and log in ``data_dir``, always stopped.

    The launchers are dataclasses deriving from this; each declares ``name``, ``data_dir`` and
    ``process`` as its fields and says how to start (argv, config, readiness probe).
    """

    name: str
    data_dir: Path
    process: ServerProcess | None
    # A second SIGTERM this many seconds into a stop (None: one is enough); see ServerProcess.stop.
    second_sigterm_after: ClassVar[float | None] = None

    def write_config(self, filename: str, text: str) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / filename
        path.write_text(text)
        return path

    def launch(
        self,
        argv: Sequence[str],
        ready: Callable[[], bool],
        timeout: float | None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start ``argv`` with its log at ``<data_dir>/<name>.log``; then wait until ``ready``
        (``timeout`` None: do not wait, the caller waits later)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = ServerProcess(self.name, argv, self.data_dir / f"{self.name}.log", env=env)
        self.process.start()
        if timeout is not None:
            self.process.wait_ready(ready, timeout)

    def stop(self) -> None:
        if self.process:
            self.process.stop(force_after=self.second_sigterm_after)

    def kill(self) -> None:
        if self.process:
            self.process.kill()


class _Startable(Protocol):
    def start(self) -> None: ...


class _Stoppable(_Startable, Protocol):
    def stop(self) -> None: ...


_S = TypeVar("_S", bound=_Startable)
_T = TypeVar("_T", bound=_Stoppable)


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


@contextlib.contextmanager
def running(make: Callable[[int], _T]) -> Iterator[_T]:
    """:func:`start_with_fresh_ports`, and the server stopped when the block ends."""
    server = start_with_fresh_ports(make)
    try:
        yield server
    finally:
        server.stop()
