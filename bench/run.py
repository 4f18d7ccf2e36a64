"""`make bench`: every benchmark against the real servers on loopback, bounded in time, then the report.

    .venv/bin/python -m bench                 # everything, ~15 min on 2 cores: bench/results, bench/REPORT.md
    .venv/bin/python -m bench --quick         # small sizes, into a temporary directory
    .venv/bin/python -m bench --only overhead,spread
    .venv/bin/python -m bench --only listrooms --merge --note "…"   # one section into the newest results

Sections run one after another (never two loads at once), each under its own time limit and the
whole run under ``--budget-s``; a section that fails or runs out of time is recorded as such and
the others still run. Results: ``<out>/<date>.json`` (UTC date), ``<out>/<date>-*.png`` and the
markdown report (``bench/REPORT.md`` for a full run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from bench import (
    compare,
    deadlines,
    failover,
    footprint,
    listrooms,
    liverooms,
    overhead,
    scaleout,
    scheduler_bench,
    sharing,
    spread,
)
from bench.common import REPO, machine, now_iso, rounded
from shared.logs import configure_logging

RESULTS = REPO / "bench" / "results"
REPORT = REPO / "bench" / "REPORT.md"


async def scheduler_section(_: Path, quick: bool) -> dict[str, Any]:
    seconds = 0.6 if quick else 1.5
    rows = []
    for n in (10, 100, 1000):
        for strategy in ("p2c", "least_loaded"):
            r = await asyncio.to_thread(scheduler_bench.throughput, n, strategy, seconds)
            rows.append({"pools": n, "strategy": strategy, **r})
            print(f"  {n:>5} pools {strategy:<12}: {r['index']:>10,.0f} decisions/s (index)", flush=True)
    return {"seconds_per_cell": seconds, "rows": rows}


# name -> (runner, time limit in seconds for a full run)
SECTIONS: dict[str, tuple[Callable[[Path, bool], Awaitable[dict[str, Any]]], float]] = {
    "scheduler": (scheduler_section, 60),
    "overhead": (overhead.run, 150),
    "spread": (spread.run, 120),
    "scaleout": (scaleout.run, 200),
    "compare": (compare.run, 300),
    "failover": (failover.run, 900),
    "footprint": (footprint.run, 300),
    "listrooms": (listrooms.run, 200),
    "liverooms": (liverooms.run, 900),
    "deadlines": (deadlines.run, 300),
    "sharing": (sharing.run, 420),
}


async def run_all(names: list[str], work: Path, quick: bool, budget_s: float) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {
        "started": now_iso(),
        "quick": quick,
        "machine": machine(),
        "sections": {},
    }
    for name in names:
        runner, limit = SECTIONS[name]
        left = budget_s - (time.monotonic() - started)
        if left < 20:
            results["sections"][name] = {"status": "skipped", "error": "run time budget used up"}
            print(f"== {name}: skipped (time budget)", flush=True)
            continue
        limit = min(limit, left)
        print(f"== {name} (limit {limit:.0f} s)", flush=True)
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(limit):
                data = await runner(work / name, quick)
            results["sections"][name] = {"status": "ok", **data}
        except TimeoutError:
            results["sections"][name] = {"status": "timeout", "error": f"did not finish within {limit:.0f} s"}
            print(f"   {name}: TIMEOUT after {limit:.0f} s", flush=True)
        except Exception as exc:
            results["sections"][name] = {
                "status": "error",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8),
            }
            print(f"   {name}: ERROR {type(exc).__name__}: {exc}", flush=True)
        results["sections"][name]["wall_s"] = time.monotonic() - t0
    results["finished"] = now_iso()
    results["wall_s"] = time.monotonic() - started
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run), into a temp dir")
    parser.add_argument("--only", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    parser.add_argument(
        "--out", type=Path, help="results directory (default bench/results; --quick: a temp dir)"
    )
    parser.add_argument("--budget-s", type=float, default=1500.0, help="whole-run time limit (default 1500)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only: replace those sections in today's results, or in the newest results file when "
        "there is none today (the replaced ones are kept as 'superseded', and the rerun is listed in the "
        "report with --note)",
    )
    parser.add_argument("--note", default="", help="why the sections were rerun (shown in the report)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections: {', '.join(unknown)}")
    out: Path = args.out or (Path(tempfile.mkdtemp(prefix="switchboard-bench-")) if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-work-") as tmp:
        work = Path(tmp)
        # The in-process orchestrators log as in production (INFO), to a file, not over the progress lines.
        configure_logging("INFO", "text")
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        log_file = (work / "driver.log").open("a")
        handler.setStream(log_file)
        try:
            results = uvloop.run(run_all(names, work, args.quick, args.budget_s))
        finally:
            handler.setStream(sys.stderr)
            logging.getLogger().setLevel(logging.WARNING)
            log_file.close()
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    results["date"] = date
    json_path = out / f"{date}.json"
    if args.merge and args.only and not json_path.exists():
        # No full run today: the sections join the newest results (and that report).
        json_path = max(out.glob("????-??-??.json"), default=json_path)
    if args.merge and args.only and json_path.exists():
        merged = json.loads(json_path.read_text())
        added = [name for name in results["sections"] if name not in merged["sections"]]
        for name, section in results["sections"].items():
            if name in merged["sections"]:
                earlier = merged.setdefault("superseded", {}).setdefault(name, [])
                if isinstance(earlier, dict):  # a file written before superseded runs were lists
                    earlier = merged["superseded"][name] = [earlier]
                earlier.append(merged["sections"][name])
            merged["sections"][name] = section
        merged.setdefault("reruns", []).append(
            {
                "sections": names,
                "started": results["started"],
                "wall_s": results["wall_s"],
                "loadavg_at_start": results["machine"]["loadavg_at_start"],
                "note": args.note,
                "added": added,
            }
        )
        results = merged
    json_path.write_text(json.dumps(rounded(results), indent=1) + "\n")
    from bench import report  # matplotlib: only once the measurements are done

    report_path = REPORT if out.resolve() == RESULTS.resolve() else out / "REPORT.md"
    report.write(results, out, json_path, report_path)
    print(f"wrote {json_path}, {report_path} and plots in {out} ({results['wall_s']:.0f} s)", flush=True)
    failed = [n for n, s in results["sections"].items() if s.get("status") != "ok"]
    if failed:
        print(f"sections that did not complete: {', '.join(failed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
