"""`switchboard status`: pools (from heartbeats) and rooms (from KV), as tables or JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.ops.census import HEARD
from orchestrator.ops.rooms import by_state
from orchestrator.records import TERMINAL, RoomRecord
from orchestrator.scheduler import PoolView

BAR_WIDTH = 12
# Room rows listed in the table; the by-state summary always counts them all.
MAX_ROOM_ROWS = 40


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    pools: list[PoolView]
    rooms: list[RoomRecord]
    taken_at: float  # unix seconds
    pools_from: str = HEARD  # where the pools came from: "orchestrator <replica>", or HEARD


def to_json(snapshot: StatusSnapshot) -> dict[str, Any]:
    return {
        "taken_at": snapshot.taken_at,
        "pools_from": snapshot.pools_from,
        "pools": [pool_json(p) for p in snapshot.pools],
        "rooms_by_state": by_state(snapshot.rooms),
        "rooms": [room_json(r) for r in snapshot.rooms],
    }


def pool_json(p: PoolView) -> dict[str, Any]:
    return {
        "pool": p.pool,
        "agent": p.agent,
        "region": p.region,
        "agent_name": p.agent_name,
        "workers": p.workers,
        "capacity": p.capacity,
        "active": p.active,
        "load": round(p.load, 4),
        "heartbeat_age_s": None if p.age_s is None else round(p.age_s, 3),
        "liveness": p.liveness,
        "draining": p.draining,
    }


def room_json(r: RoomRecord) -> dict[str, Any]:
    return {
        "room": r.room,
        "state": r.state.value,
        "pool": r.pool,
        "attempt": r.attempt,
        "agent": r.agent,
        "rule": r.rule,
        "reason": r.reason,
        "dispatch_id": r.dispatch_id,
        "trace_id": r.trace_id,
        "received_at": r.received_at,
        "voice_at": r.voice_at,
        "origin": r.origin,
        "waiting_since": r.waiting_since,
    }


def load_bar(load: float, width: int = BAR_WIDTH) -> Text:
    filled = round(max(0.0, min(1.0, load)) * width)
    style = "green" if load < 0.7 else ("yellow" if load < 0.9 else "red")
    bar = Text("█" * filled, style=style)
    bar.append("░" * (width - filled), style="dim")
    bar.append(f" {load * 100:3.0f}%")
    return bar


_LIVENESS_STYLE = {"alive": "green", "draining": "yellow", "dead": "red"}
_STATE_STYLE = {
    "speaking": "green",
    "joined": "cyan",
    "dispatched": "cyan",
    "failed": "red",
    "redispatching": "yellow",
    "waiting_for_pool": "yellow",
    "waiting_for_livekit": "yellow",
    "ignored": "dim",
    "ended": "dim",
}


def pools_table(pools: list[PoolView], pools_from: str = HEARD) -> Table:
    source = "heard from heartbeats" if pools_from == HEARD else f"as {pools_from} judges them"
    table = Table(title=f"Pools ({source})", title_justify="left", expand=False)
    for col in (
        "pool",
        "region",
        "agent_name",
        "workers",
        "capacity",
        "active",
        "load",
        "heartbeat",
        "state",
    ):
        table.add_column(col, justify="right" if col in ("workers", "capacity", "active") else "left")
    if not pools:
        table.add_row("(no pool heard)", "", "", "", "", "", "", "", "")
    for p in pools:
        age = "never" if p.age_s is None else f"{p.age_s:.1f}s ago"
        table.add_row(
            p.pool,
            p.region,
            p.agent_name,
            str(p.workers),
            str(p.capacity),
            str(p.active),
            load_bar(p.load) if p.capacity else Text("-", style="dim"),
            age,
            Text(p.liveness, style=_LIVENESS_STYLE[p.liveness]),
        )
    return table


def rooms_table(rooms: list[RoomRecord], now: float) -> Table:
    counts = by_state(rooms)
    summary = "  ".join(f"{state} {n}" for state, n in counts.items()) or "none"
    found = sum(1 for r in rooms if r.origin == "resync" and r.state not in TERMINAL)
    if found:
        # Served only because the resync found them in LiveKit: their webhooks were lost.
        summary += f"  (found by resync, no event: {found})"
    table = Table(title=f"Rooms by state: {summary}", title_justify="left", expand=False)
    for col in ("room", "state", "pool", "attempt", "since", "reason"):
        table.add_column(col)
    # Live rooms first (what an operator acts on), then the finished ones; newest first in each.
    ordered = sorted(rooms, key=lambda r: (r.state in TERMINAL, -r.received_at))
    for r in ordered[:MAX_ROOM_ROWS]:
        since = _since(r.history[-1].at if r.history else r.received_at, now)
        table.add_row(
            r.room,
            Text(r.state.value, style=_STATE_STYLE.get(r.state.value, "")),
            r.pool or "-",
            str(r.attempt),
            since,
            _why(r, now),
        )
    if len(ordered) > MAX_ROOM_ROWS:
        table.caption = f"{len(ordered) - MAX_ROOM_ROWS} more rooms not listed (use --json)"
    return table


def _why(r: RoomRecord, now: float) -> str:
    """The reason column: the record's reason, how long it waits for LiveKit, how it was found."""
    parts = [r.reason] if r.reason else []
    if r.waiting_since is not None and r.state.value == "waiting_for_livekit":
        parts.append(f"LiveKit unreachable for {_since(r.waiting_since, now)}")
    if r.origin == "resync":
        parts.append("found by resync (its event never came)")
    return "; ".join(parts)


def render(snapshot: StatusSnapshot) -> RenderableType:
    return Group(
        pools_table(snapshot.pools, snapshot.pools_from), rooms_table(snapshot.rooms, snapshot.taken_at)
    )


def _since(at: float, now: float) -> str:
    secs = max(0.0, now - at)
    if secs < 120:
        return f"{secs:.0f}s"
    if secs < 7200:
        return f"{secs / 60:.0f}m"
    return f"{secs / 3600:.0f}h"


def now_s() -> float:
    return time.time()
