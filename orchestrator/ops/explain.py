"""`switchboard explain ROOM`: a room's timeline from its KV record, as plain lines.

Pure functions from a :class:`RoomRecord` (or its absence) to text, so they are testable without
servers; the CLI only fetches the record and prints. Decision entries carry the scheduler's
``Decision.to_dict()`` in ``data``: candidates with scores and every rejected pool with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator.records import HistoryEntry, RoomRecord
from orchestrator.rules import match_rule
from shared.config import Rule

_INDENT = " " * 14


def trace_url(base: str | None, trace_id: str | None) -> str | None:
    if not base or not trace_id:
        return None
    return f"{base.rstrip('/')}/trace/{trace_id}"


def explain_record(record: RoomRecord, trace_ui_url: str | None = None) -> list[str]:
    r = record
    lines = [f"room {r.room}  (sid {r.sid or '-'})"]
    where = f", pool {r.pool}" if r.pool else ""
    why = f", reason {r.reason}" if r.reason else ""
    lines.append(f"  state      {r.state.value} (attempt {r.attempt}{where}{why})")
    if r.rule:
        lines.append(f"  rule       {r.rule} → agent {r.agent}, home region {r.home_region}")
    if r.excluded:
        lines.append(f"  excluded   {', '.join(r.excluded)} (failed this room before)")
    lines.append(f"  trace      {r.trace_id or '(none recorded)'}")
    url = trace_url(trace_ui_url, r.trace_id)
    if url:
        lines.append(f"             {url}")
    lines.extend(_durations(r))
    lines.append("  timeline")
    start = r.history[0].at if r.history else r.received_at
    for entry in r.history:
        lines.extend(_entry(entry, start))
    return lines


def explain_unknown(room: str, rules: Sequence[Rule]) -> list[str]:
    match = match_rule(room, rules)
    lines = [
        f"room {room}: no record — Switchboard never received an event for it.",
        "  (LiveKit sends room_started when the room is created: is the ingest its webhook target?)",
    ]
    if match.rule is None:
        lines.append(f"  if it did arrive now: ignored, {match.reason}")
        lines.append("  fix: add a rule whose glob matches this room to switchboard.yaml")
    else:
        lines.append(f"  if it did arrive now: {match.reason} → agent {match.rule.agent}")
        lines.append(f"  dispatch it by hand: switchboard dispatch {room}")
    return lines


def _durations(r: RoomRecord) -> list[str]:
    parts = []
    base = r.event_at or r.received_at
    if r.received_at and r.event_at:
        parts.append(f"event→received {r.received_at - r.event_at:.2f}s")
    if r.dispatched_at:
        parts.append(f"→dispatched {r.dispatched_at - base:.2f}s")
    if r.joined_at:
        parts.append(f"→joined {r.joined_at - base:.2f}s")
    if r.voice_at:
        parts.append(f"→voice {r.voice_at - base:.2f}s")
    return [f"  timings    {', '.join(parts)}"] if parts else []


def _entry(h: HistoryEntry, start: float) -> list[str]:
    clock = datetime.fromtimestamp(h.at, UTC).strftime("%H:%M:%S.%f")[:-3]
    head = f"    {clock} +{h.at - start:7.3f}s  {h.event:<14} → {h.state.value:<16} {h.detail}"
    lines = [head.rstrip()]
    if h.event == "decision" and h.data:
        lines.extend(_decision(h.data))
    elif h.event == "redispatch" and h.data:
        lines.append(f"{_INDENT}cause {h.data.get('cause')} on pool {h.data.get('pool') or '-'}")
    elif h.event == "dispatched" and h.data.get("dispatch_id"):
        lines.append(f"{_INDENT}dispatch id {h.data['dispatch_id']} on pool {h.data.get('pool')}")
    elif h.event == "dispatch_error" and h.data:
        extra = ", ".join(f"{k} {v}" for k, v in sorted(h.data.items()))
        lines.append(f"{_INDENT}{extra}")
    elif h.event in ("joined", "voice") and h.data.get("worker"):
        lines.append(f"{_INDENT}worker {h.data['worker']}")
        for warning in h.data.get("warnings", []):
            lines.append(f"{_INDENT}warning: {warning}")
    return lines


def _decision(data: dict[str, Any]) -> list[str]:
    lines = [
        f"{_INDENT}home {data.get('home')}, strategy {data.get('strategy')}, seed {data.get('seed')}"
        + (f", sampled {', '.join(data['sampled'])}" if data.get("sampled") else "")
    ]
    candidates = data.get("candidates") or []
    if candidates:
        lines.append(f"{_INDENT}candidates (ranked):")
    for c in candidates:
        mark = "  ← chosen" if c.get("chosen") else ""
        lines.append(
            f"{_INDENT}  {c.get('pool'):<20} region {c.get('region')}, tier {c.get('tier')}, "
            f"headroom {c.get('headroom')} (capacity {c.get('capacity')}, active {c.get('active')}, "
            f"reserved {c.get('reserved')}){mark}"
        )
    rejections = data.get("rejections") or {}
    if rejections:
        lines.append(f"{_INDENT}rejected:")
    for pool, why in sorted(rejections.items()):
        lines.append(f"{_INDENT}  {pool:<20} {why}")
    if not candidates and not rejections:
        lines.append(f"{_INDENT}no pool known at all (no heartbeats, nothing pinned)")
    return lines
