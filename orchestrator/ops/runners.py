"""The async bodies of the operator commands: fetch, call the op, print. One function per command.

They return the process exit code; :mod:`switchboard.cli` parses options and runs them. Each
imports its op when it runs: `status` should not load LiveKit's API client for `doctor`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.text import Text

from orchestrator.ops.session import nats_session
from shared.bus import NatsUnavailableError
from shared.config import ConfigError

if TYPE_CHECKING:
    from orchestrator.ops.drill import DrillReport, PoolKiller
    from orchestrator.ops.live import LiveView
    from shared.config import SwitchboardConfig
    from shared.settings import Settings


def _nats_down(console: Console, err: Exception) -> int:
    console.print(Text(f"✘ {err}", style="red"), soft_wrap=True)
    console.print("  is NATS running, and is NATS_URL right? (switchboard doctor checks the whole chain)")
    return 2


async def status(settings: Settings, config: SwitchboardConfig, *, as_json: bool, watch: bool) -> int:
    from orchestrator.ops.census import current_pools
    from orchestrator.ops.live import LiveView
    from orchestrator.ops.rooms import read_rooms
    from orchestrator.ops.status import StatusSnapshot, render, to_json

    console = Console()
    if not console.is_terminal:
        console.width = 160  # a pipe or a log: do not squeeze the tables into 80 columns
    try:
        async with nats_session(settings, "status") as nc:
            if watch:
                await _watch(LiveView(nc, config, settings.region), console)
                return 0
            (pools_from, pools), rooms = await asyncio.gather(
                current_pools(nc, config), read_rooms(nc.jetstream(), config.cells(settings.region))
            )
            snapshot = StatusSnapshot(pools, rooms, time.time(), pools_from)
    except NatsUnavailableError as err:
        return _nats_down(console, err)
    if as_json:
        sys.stdout.write(json.dumps(to_json(snapshot), indent=2) + "\n")
    else:
        console.print(render(snapshot))
    return 0


async def _watch(live: LiveView, console: Console) -> None:
    from orchestrator.ops.status import render

    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(live.run())
        # Let the first heartbeats and the KV snapshot arrive before the first frame.
        await asyncio.sleep(live.census.heartbeat_interval_s * 1.5)
        try:
            with Live(render(live.snapshot()), console=console, refresh_per_second=2) as screen:
                while True:
                    screen.update(render(live.snapshot()))
                    await asyncio.sleep(1.0)
        finally:
            runner.cancel()


async def explain(settings: Settings, config: SwitchboardConfig, room: str, trace_ui_url: str | None) -> int:
    from orchestrator.ops.explain import explain_record, explain_unknown
    from orchestrator.ops.rooms import get_room

    console = Console(highlight=False)
    try:
        async with nats_session(settings, "explain") as nc:
            record = await get_room(nc.jetstream(), room, config.cells(settings.region))
    except NatsUnavailableError as err:
        return _nats_down(console, err)
    lines = (
        explain_record(record, trace_ui_url or config.trace_ui_url)
        if record
        else explain_unknown(room, config.rules)
    )
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)
    return 0 if record else 1


async def dispatch(
    settings: Settings,
    config: SwitchboardConfig,
    room: str,
    agent: str | None,
    pool: str | None,
    region: str | None,
    wait_s: float,
) -> int:
    from orchestrator.ops.dispatch import manual_dispatch

    console = Console(highlight=False)
    # With per-region state, into the cell of the room's home region (--region), else of this one's.
    try:
        cell = config.cell_or_default(region or settings.region)
    except ConfigError as err:
        console.print(Text(f"✘ {err}", style="red"), soft_wrap=True)
        return 2
    try:
        async with nats_session(settings, "dispatch") as nc:
            outcome = await manual_dispatch(
                nc,
                settings.livekit,
                room,
                agent=agent,
                pool=pool,
                region=region,
                wait_s=wait_s,
                cell=cell,
                look_in=config.cells(None),
            )
    except NatsUnavailableError as err:
        return _nats_down(console, err)
    mark = "✔" if outcome.published else "·"
    console.print(f"{mark} {outcome.message}", markup=False, soft_wrap=True)
    if outcome.record and outcome.record.trace_id:
        console.print(
            f"  trace {outcome.record.trace_id}; timeline: switchboard explain {room}", markup=False
        )
    if not outcome.published:
        return 1
    failed = outcome.record is not None and outcome.record.state.value in ("failed", "ignored")
    return 1 if failed else 0


async def drain(settings: Settings, config: SwitchboardConfig, pool: str) -> int:
    from orchestrator.ops.drain import drain_pool

    console = Console(highlight=False)
    try:
        async with nats_session(settings, "drain") as nc:
            outcome = await drain_pool(nc, config, pool)
    except NatsUnavailableError as err:
        return _nats_down(console, err)
    if not outcome.workers:
        console.print(
            f"· drain sent to pool {pool}, but no worker of it is heartbeating: nothing was running there "
            "(check the pool id: switchboard status)",
            markup=False,
        )
        return 1
    console.print(f"✔ drain sent to pool {pool}; workers asked:", markup=False)
    for hb in outcome.workers:
        console.print(f"  {hb.worker}  ({hb.active}/{hb.capacity} jobs, {hb.agent_name})", markup=False)
    console.print("the orchestrator schedules nothing new onto it; running jobs finish first", markup=False)
    return 0


async def doctor(settings: Settings, config: SwitchboardConfig | None, config_error: str | None) -> int:
    from orchestrator.ops.doctor import print_results
    from orchestrator.ops.doctor_checks import exit_code, run_checks
    from orchestrator.ops.doctor_facts import gather_facts

    facts = await gather_facts(settings, config, dict(os.environ), config_error)
    results = run_checks(facts)
    print_results(Console(highlight=False), results)
    return exit_code(results)


async def drill_kill_pool(settings: Settings, pool: str, kill: PoolKiller | None, deadline_s: float) -> int:
    from orchestrator.ops.drill import NothingToDrill, kill_pool_drill

    console = Console(highlight=False)
    try:
        async with nats_session(settings, "drill") as nc:
            report = await kill_pool_drill(nc, pool, kill=kill, deadline_s=deadline_s)
    except NatsUnavailableError as err:
        return _nats_down(console, err)
    except NothingToDrill as err:
        console.print(f"· {err}", markup=False)
        return 1
    return _print_drill(console, report, deadline_s)


def _print_drill(console: Console, report: DrillReport, deadline_s: float) -> int:
    console.print(f"killed pool {report.pool}: {report.method}", markup=False)
    for r in sorted(report.rooms, key=lambda r: r.room):
        if r.recovered_s is None:
            console.print(
                f"  ✘ {r.room:<28} not speaking again within {deadline_s:.0f}s (last: {r.last_state}, "
                f"attempt {r.attempt})",
                markup=False,
            )
        else:
            console.print(
                f"  ✔ {r.room:<28} recovered in {r.recovered_s:6.2f}s on {r.new_pool} (attempt {r.attempt})",
                markup=False,
            )
        known = [(phase, s) for phase, s in r.phases if s is not None]
        if known:
            line = " · ".join(f"{phase} {s:.2f}s" for phase, s in known)
            console.print(f"      {line}", markup=False, soft_wrap=True)  # one line per room, for grep
    p50, worst = report.p50(), report.max()
    summary = f"{len(report.recovered)}/{len(report.rooms)} rooms recovered"
    if p50 is not None and worst is not None:
        summary += f"; p50 {p50:.2f}s, max {worst:.2f}s"
    console.print(summary, markup=False)
    return 1 if report.missing else 0
