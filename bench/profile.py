"""Where a replica's CPU goes per dispatched room: bench section 9's load, with py-spy on the replica.

    .venv/bin/python -m bench.profile                        # 0 live rooms, 25 s of events
    .venv/bin/python -m bench.profile --live-rooms 100000    # the same with 100,000 live rooms

Runs section 9 (``bench/liverooms.py``) at one size and, while its measured events are published
(100/s), samples the replica with py-spy (200 Hz, the ``bench`` extra installs it). Writes
``bench/results/profile-<live rooms>.md``: the share of samples in each of the hottest functions
(inclusive: the function and what it calls), and the hottest frames by their own time. Shares are
of samples where the replica was running Python, so they add across a call chain, not across the
table. Issue 15, goal 4 asks for these frames before any cut.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import liverooms
from bench.common import REPO, now_iso

RESULTS = REPO / "bench" / "results"
RATE_HZ = 200
TOP = 30
SELF_TOP = 15
# Frames worth naming (the rest of the stack is the event loop and the standard library).
OURS = re.compile(
    r"orchestrator/|shared/|livekit|nats/|aiohttp|pydantic|opentelemetry|logging/|json/|jwt/|prometheus"
)


def replica_pid() -> int | None:
    """The running ``switchboard orchestrator`` this process started (the section's replica)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and b"orchestrator" in cmd and any(b"switchboard" in c for c in cmd):
            found.append(int(entry.name))
    return max(found) if found else None


def summarize(raw: str) -> tuple[int, list[tuple[float, str]], list[tuple[float, str]]]:
    """(samples, [(share, function)] inclusive, [(share, frame)] by own time) of py-spy's raw output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    if not total:
        return 0, [], []
    top = [(n / total, f) for f, n in inclusive.most_common() if OURS.search(f)][:TOP]
    return total, top, [(n / total, f) for f, n in own.most_common(SELF_TOP)]


def report(
    size: int, seconds: float, total: int, top: list[tuple[float, str]], own: list[tuple[float, str]]
) -> str:
    lines = [
        f"# Replica profile: {size:,} live rooms, 100 events/s",
        "",
        f"`python -m bench.profile --live-rooms {size} --seconds {seconds:g}` at {now_iso()}: py-spy "
        f"at {RATE_HZ} Hz on the replica of bench section 9 while its measured events were published; "
        f"{total:,} samples. Share = samples in the function or what it calls.",
        "",
        "| share | function |",
        "|---|---|",
        *(f"| {s:.1%} | `{f}` |" for s, f in top),
        "",
        "Own time (the frame itself):",
        "",
        "| share | frame |",
        "|---|---|",
        *(f"| {s:.1%} | `{f}` |" for s, f in own),
        "",
    ]
    return "\n".join(lines)


def _with_profiler(
    publisher: Callable[..., Awaitable[dict[str, Any]]], out: Path
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """``publisher`` (liverooms' run_publisher), with py-spy on the replica while the measured
    events (not the warm-up) are published."""

    async def run(
        nats_url: str, mode: str, rate: float, count: int, prefix: str, path: Path
    ) -> dict[str, Any]:
        pid = replica_pid()
        if prefix.endswith("wu") or pid is None:
            return await publisher(nats_url, mode, rate, count, prefix, path)
        spy = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(RATE_HZ),
            "--duration",
            str(max(1, int(count / rate) - 1)),
            "--format",
            "raw",
            "--output",
            str(out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            return await publisher(nats_url, mode, rate, count, prefix, path)
        finally:
            async with asyncio.timeout(30):
                await spy.wait()

    return run


async def profile(size: int, seconds: float) -> Path:
    if shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None:
        raise SystemExit("py-spy is missing: install the bench extra (`make bench` does)")
    with tempfile.TemporaryDirectory(prefix="switchboard-profile-") as tmp:
        work = Path(tmp)
        raw = work / "replica.txt"
        liverooms.run_publisher = _with_profiler(liverooms.run_publisher, raw)  # type: ignore[attr-defined, assignment]
        await liverooms.liverooms(work, (size,), seconds, liverooms.DRAIN_S)
        if not raw.exists():
            raise SystemExit("py-spy wrote nothing (was the replica running? see its output above)")
        total, top, own = summarize(raw.read_text())
    out = RESULTS / f"profile-{size}.md"
    out.write_text(report(size, seconds, total, top, own))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--live-rooms", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=25.0, help="of measured events (100/s)")
    args = parser.parse_args(argv)
    out = asyncio.run(profile(args.live_rooms, args.seconds))
    print(out.read_text())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
