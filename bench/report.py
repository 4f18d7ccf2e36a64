"""The markdown report and the plots, from the results dictionary of one run (see bench/run.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

DPI = 80
Verdict = tuple[str, str, str, str]  # measure, goal, figure, met


def _get(d: Any, *keys: Any) -> Any:
    for k in keys:
        if d is None:
            return None
        d = d.get(k) if isinstance(d, dict) else (d[k] if isinstance(d, list) and len(d) > k else None)
    return d


def _ok(section: dict[str, Any] | None) -> bool:
    return bool(section) and section.get("status") == "ok"  # type: ignore[union-attr]


def _met(flag: bool | None) -> str:
    return "—" if flag is None else ("**met**" if flag else "**not met**")


def _f(x: Any, fmt: str = ".2f", unit: str = "") -> str:
    return "n/a" if x is None else f"{x:{fmt}}{unit}"


# ------------------------------------------------------------------------------------------------
# verdicts
# ------------------------------------------------------------------------------------------------


def verdicts(sections: dict[str, Any]) -> list[Verdict]:
    out: list[Verdict] = []
    s: Any = sections.get("scheduler")
    if _ok(s):
        by = {(r["pools"], r["strategy"]): r for r in s["rows"]}
        r100 = by.get((100, "p2c"))
        fig = ", ".join(f"{n}: {by[(n, 'p2c')]['index']:,.0f}/s" for n in (10, 100, 1000) if (n, "p2c") in by)
        out.append(
            (
                "1. Scheduler decisions/s (p2c, PoolIndex)",
                "≥ 200,000/s at 100 pools",
                fig,
                _met(r100 is not None and r100["index"] >= 200_000),
            )
        )
    else:
        out.append(("1. Scheduler", "≥ 200,000/s at 100 pools", _status(s), _met(None)))

    s = sections.get("overhead")
    if _ok(s):
        rows = {r["rate"]: r for r in s["rates"]}
        floors = {r["rate"]: r for r in s["floor"]}
        r = rows.get(100)
        figs = []
        for rate in sorted(rows):
            e = rows[rate]["event_to_create_dispatch_ms"]
            fl = _get(floors, rate, "pickup_ms")
            figs.append(
                f"{rate}/s: p50 {_f(e['p50'])} / p99 {_f(e['p99'])} ms"
                + (f" (NATS floor {_f(fl['p50'])} / {_f(fl['p99'])})" if fl else "")
            )
        met = None
        if r:
            e = r["event_to_create_dispatch_ms"]
            met = e["p50"] is not None and e["p50"] <= 2 and e["p99"] is not None and e["p99"] <= 10
        out.append(
            (
                "2. Orchestrator overhead, event → CreateDispatch",
                "p50 ≤ 2 ms, p99 ≤ 10 ms at 100/s",
                "; ".join(figs),
                _met(met),
            )
        )
    else:
        out.append(("2. Orchestrator overhead", "p50 ≤ 2 ms, p99 ≤ 10 ms at 100/s", _status(s), _met(None)))

    s = sections.get("compare")
    if _ok(s):
        rj, ra = s.get("ratio_of_medians_joined"), s.get("ratio_of_medians_first_audio")
        fig = (
            f"joined p50 {_f(_get(s, 'sb', 'joined_s', 'p50'), '.3f')} s vs "
            f"{_f(_get(s, 'auto', 'joined_s', 'p50'), '.3f')} s "
            f"(ratio {_f(rj, '.3f')}); first audio p50 {_f(_get(s, 'sb', 'first_audio_s', 'p50'), '.3f')} s "
            "vs "
            f"{_f(_get(s, 'auto', 'first_audio_s', 'p50'), '.3f')} s (ratio {_f(ra, '.3f')}); "
            f"n = {_get(s, 'sb', 'joined_s', 'n')} + {_get(s, 'auto', 'joined_s', 'n')}"
        )
        met = None if rj is None or ra is None else (rj <= 1.05 and ra <= 1.05)
        out.append(
            (
                "3. Time to joined / first audio, Switchboard vs automatic dispatch",
                "ratio of medians ≤ 1.05",
                fig,
                _met(met),
            )
        )
    else:
        out.append(
            ("3. Switchboard vs automatic dispatch", "ratio of medians ≤ 1.05", _status(s), _met(None))
        )

    s = sections.get("spread")
    if _ok(s):
        p, ll = s["orchestrator_p2c"], s["orchestrator_least_loaded"]
        herd = s["pure_least_loaded_no_reservations"]
        fig = (
            f"p2c + reservations: max/mean {_f(p['max_over_mean_worst'], '.3f')} (worst of {p['trials']}), "
            f"over capacity: {'yes' if p['any_over_capacity'] else 'none'}; least-loaded + reservations "
            f"{_f(ll['max_over_mean_worst'], '.3f')}; least-loaded without reservations "
            f"{_f(herd['max_over_mean_worst'], '.2f')} ({herd['over_capacity_rooms_worst']} rooms over "
            "capacity)"
        )
        met = (
            (not p["any_over_capacity"])
            and p["max_over_mean_worst"] is not None
            and p["max_over_mean_worst"] <= 1.15
        )
        out.append(
            (
                "4. Load spread, 200 rooms into 4 unequal pools",
                "no pool over capacity, max/mean ≤ 1.15",
                fig,
                _met(met),
            )
        )
    else:
        out.append(("4. Load spread", "no pool over capacity, max/mean ≤ 1.15", _status(s), _met(None)))

    s = sections.get("failover")
    if _ok(s):
        for r in s["rows"]:
            h = r["listener_heard_s"]
            default = r["heartbeat_interval_s"] == 1.0
            goal_s = 2.5 if r["rooms"] <= 10 else 4.0
            met = (
                r["recovered"] == r["affected"] and h["p99"] is not None and h["p99"] <= goal_s
                if default
                else None
            )
            out.append(
                (
                    f"5. Failover, SIGKILL a pool with {r['rooms']} speaking rooms, "
                    f"heartbeat {r['heartbeat_interval_s']:g} s",
                    f"listener hears the new agent p99 ≤ {goal_s:g} s" if default else "reported",
                    f"{r['recovered']}/{r['affected']} recovered; listener hears p50 {_f(h['p50'])} / "
                    f"p99 {_f(h['p99'])} / max {_f(h['max'])} s",
                    _met(met),
                )
            )
    else:
        out.append(("5. Failover", "p99 ≤ 2.5 s (10 rooms), ≤ 4 s (50 rooms)", _status(s), _met(None)))

    s = sections.get("scaleout")
    if _ok(s):
        by = {(r["backend"], r["replicas"]): r for r in s["rows"]}
        figs = []
        for backend in ("livekit", "standin"):
            rates = [by[(backend, n)]["rooms_per_s"] for n in (1, 2, 3) if (backend, n) in by]
            figs.append(
                f"{'LiveKit' if backend == 'livekit' else 'stand-in'}: "
                + " / ".join(f"{x:.0f}" for x in rates)
            )
        one, two = _get(by, ("livekit", 1), "rooms_per_s"), _get(by, ("livekit", 2), "rooms_per_s")
        met = None if one is None or two is None else (one >= 300 and two >= 1.8 * one)
        figs.append(f"2 vs 1 replica (LiveKit): ×{_f(two / one if one and two else None)}")
        out.append(
            (
                "6. Scale-out, rooms dispatched/s with 1/2/3 replicas",
                "≥ 300/s with 1, ≥ 1.8× with 2",
                "; ".join(figs),
                _met(met),
            )
        )
    else:
        out.append(("6. Scale-out", "≥ 300/s with 1, ≥ 1.8× with 2", _status(s), _met(None)))

    s = sections.get("footprint")
    if _ok(s):
        fp_rows = [r for r in s["orchestrator"]["rows"] if r["rooms"] > 1]
        w = s["worker"]
        fig = "; ".join(
            f"{r['rooms'] - 1:,} rooms: {_f(r['rss_kb_per_room'], '.1f')} kB/room in process, "
            f"{_f(r['kv_bytes_per_room'], '.0f')} B/room in KV"
            for r in fp_rows
        ) + (
            f"; worker idle {_f(w['idle_rss_mb'], '.0f')} MB RSS / {_f(w['idle_pss_mb'], '.0f')} MB PSS, "
            f"+{_f(w['per_job_rss_mb'], '.0f')} MB RSS / +{_f(w['per_job_pss_mb'], '.0f')} MB PSS per job"
        )
        out.append(("7. Footprint", "(no goal: reported)", fig, "—"))
    else:
        out.append(("7. Footprint", "(no goal: reported)", _status(s), "—"))

    s = sections.get("listrooms")
    goal = "(no goal: reported; resync budget ≤ 2 % of a core)"
    if _ok(s) and s["rows"]:
        r = s["rows"][-1]
        f = r.get("filtered") or {}
        at_target = _f(_round100(_get(s, "fit", "rooms_at_target")), ",.0f")
        fig = (
            f"{r['rooms']:,} rooms: ListRooms p50 {r['wall_ms_p50']:.0f} ms, "
            f"{r['http_body_bytes'] / 1e6:.1f} MB, {r['pass_cpu_ms']:.0f} ms CPU per pass (LiveKit "
            f"{r['server_cpu_ms']:.0f} + orchestrator {r['client_pass_cpu_ms']:.0f}) = "
            f"{_pc(r['core_share_at_5s'], 1)} of a core every 5 s; 2 % of a core at ~{at_target} rooms; "
            f"names=[one room] {_f(f.get('server_cpu_ms'), '.1f')} ms LiveKit CPU"
        )
        out.append(("8. ListRooms, one resync pass", goal, fig, "—"))
    else:
        out.append(("8. ListRooms", goal, _status(s), "—"))

    s = sections.get("liverooms")
    goal = "p99 with 100,000 live rooms ≤ 1.2 × with 0, at 100/s (issue 15, goal 1)"
    if _ok(s) and any("error" not in r for r in s["rows"]):
        figs = [
            f"{r['live_rooms']:,}: p50 {_ge(r)}{_f(r['p50_ms'], '.1f')} / "
            f"p99 {_ge(r)}{_f(r['p99_ms'], '.1f')} ms"
            for r in s["rows"]
            if "error" not in r
        ]
        lb = "≥ " if s.get("ratio_lower_bound") else ""
        figs.append(f"ratio p99 {s.get('ratio_p99_rooms') or 0:,} vs 0: {lb}×{_f(s.get('ratio_p99'))}")
        r99, goal_ratio = s.get("ratio_p99"), s.get("goal_ratio", 1.2)
        met = None
        if r99 is not None and s.get("ratio_p99_rooms") == 100_000:
            # a lower bound decides only when it is already over the goal
            met = (
                r99 <= goal_ratio if not s.get("ratio_lower_bound") else (False if r99 > goal_ratio else None)
            )
        out.append(("9. Live rooms, event → CreateDispatch", goal, "; ".join(figs), _met(met)))
    else:
        out.append(("9. Live rooms", goal, _status(s), _met(None)))

    s = sections.get("deadlines")
    goal = "p99 lateness ≤ 300 ms with 0 to 100,000 live rooms (issue 15, goal 3)"
    if _ok(s) and any("error" not in r for r in s["rows"]):
        figs = [
            f"{r['live_rooms']:,}: p50 {_ge(r)}{_f(r['p50_ms'], '.0f')} / "
            f"p99 {_ge(r)}{_f(r['p99_ms'], '.0f')} / max {_ge(r)}{_f(r['max_ms'], '.0f')} ms"
            for r in s["rows"]
            if "error" not in r
        ]
        met = s.get("goal_met")
        if met and 100_000 not in s.get("sizes", []):
            met = None  # quick sizes: no verdict on the goal's 100,000
        out.append(("10. Deadlines, join deadline → fired", goal, "; ".join(figs), _met(met)))
    else:
        out.append(("10. Deadlines", goal, _status(s), _met(None)))

    s = sections.get("sharing")
    goal = (
        "3 replicas: each tracks ~1/3 (± 15 %); one dies → its share taken over within member_ttl_s, "
        "nothing lost, no double agent; ≤ 2 KB per tracked room; start-up replays no terminal records "
        "(issue 15, goal 2)"
    )
    if _ok(s) and any("three" in r for r in s["rows"]):
        figs = [_sharing_figure(r, s) for r in s["rows"] if "three" in r]
        met = s.get("goal_met")
        if met and 30_000 not in s.get("sizes", []):
            met = None  # quick sizes: too few rooms for a verdict
        out.append(("11. Replicas divide the rooms", goal, "; ".join(figs), _met(met)))
    else:
        out.append(("11. Replicas divide the rooms", goal, _status(s), _met(None)))
    return out


def _ready(a: dict[str, Any] | None) -> str:
    if not a:
        return "n/a"
    if a.get("ready_s") is None:
        return f"not ready after {a.get('limit_s', 0):.0f} s"
    return f"{a['ready_s']:.1f} s"


def _sharing_figure(r: dict[str, Any], s: dict[str, Any]) -> str:
    three = r["three"]
    parts = [
        f"{r['live_rooms']:,} live rooms: shares "
        + " / ".join(f"{x['share']:.1%}" for x in three["replicas"].values())
        + f" (max {three['max_abs_deviation']:.1%} off 1/3), {_f(three['rss_kb_per_room_max'], '.2f')} kB "
        "RSS per tracked room (worst of 3)"
    ]
    kill, join, term = r.get("kill"), r.get("join"), r.get("term")
    if kill:
        parts.append(
            f"SIGKILL taken over in {_f(kill['takeover_s'], '.2f', ' s')} "
            f"(member_ttl_s {s['member_ttl_s']:g} s)"
        )
    if join:
        parts.append(f"a replica joining in {_f(join['takeover_s'], '.2f', ' s')}")
    if term:
        parts.append(f"SIGTERM in {_f(term['takeover_s'], '.2f', ' s')}")
    phases = [k for k in (kill, join, term) if k]
    if len(phases) == 3 and "moved_writes" in r:
        extra = [k["extra_create_dispatch"] for k in phases if k["extra_create_dispatch"] is not None]
        parts.append(
            f"{sum(k['rooms'] for k in phases):,} new rooms: {sum(k['lost'] for k in phases)} lost, "
            f"{sum(k['doubled'] for k in phases)} doubled, {sum(extra)} extra CreateDispatch; "
            f"{r['moved_writes']} writes to pre-loaded rooms"
        )
    if "alone" in r:
        parts.append(f"one replica alone: ready {_ready(r['alone'])}")
    if "alone_terminal" in r:
        replayed = r.get("terminal_replayed")
        parts.append(
            f"with {r['terminal_records']:,} terminal records too: {_ready(r['alone_terminal'])} "
            f"({'replayed' if replayed else 'not replayed' if replayed is not None else 'n/a'})"
        )
    if "error" in r:
        parts.append(f"stopped: {' '.join(str(r['error']).split())[:160]}")
    return ", ".join(parts)


def _ge(row: dict[str, Any]) -> str:
    """ "≥ " for a figure that is a lower bound (events still undispatched when the wait ended)."""
    return "≥ " if row.get("lower_bound") else ""


def _status(s: dict[str, Any] | None) -> str:
    if not s:
        return "not run"
    error = " ".join(str(s.get("error", "")).split())  # one line: it goes into a table cell
    return f"{s.get('status')}: {error[:300]}"


# ------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------


def _ecdf(ax: Any, values: list[float], label: str, **kw: Any) -> None:
    if not values:
        return
    v = np.sort(np.asarray(values, dtype=float))
    ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label, **kw)


def plot_overhead(s: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4))
    colors = {10: "tab:blue", 100: "tab:orange", 500: "tab:red"}
    for r in s["rates"]:
        _ecdf(
            ax, r.get("samples_ms", []), f"event→CreateDispatch, {r['rate']}/s", color=colors.get(r["rate"])
        )
    for r in s["floor"]:
        _ecdf(
            ax,
            r.get("samples_pickup_ms", []),
            f"NATS floor (publish→fetch), {r['rate']}/s",
            color=colors.get(r["rate"]),
            linestyle="--",
            alpha=0.7,
        )
    ax.set_xscale("log")
    ax.axvline(2, color="grey", linewidth=0.8, linestyle=":")
    ax.axvline(10, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("ms (log)")
    ax.set_ylabel("fraction of events")
    ax.set_title(
        "Orchestrator overhead vs the NATS floor (goal at 100/s: p50 ≤ 2 ms, p99 ≤ 10 ms)", fontsize=9
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_compare(s: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    rooms = [r for r in s["rooms"] if not r.get("warmup")]
    for ax, metric, title in zip(
        axes, ("joined_s", "first_audio_s"), ("agent joined", "first audible frame"), strict=True
    ):
        for path_name, label, color in (
            ("sb", "Switchboard (NATS → orchestrator → dispatch)", "tab:blue"),
            ("auto", "LiveKit automatic dispatch", "tab:green"),
        ):
            vals = [r[metric] for r in rooms if r["path"] == path_name and r.get(metric) is not None]
            _ecdf(ax, vals, label, color=color)
        if metric == "first_audio_s":
            ax.set_xscale("log")  # one room waiting for the next phrase (4 s later) would squash the rest
        ax.set_title(f"room created → {title}", fontsize=9)
        ax.set_xlabel("s")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of rooms")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_failover(s: dict[str, Any], path: Path) -> None:
    """One stacked bar per recovered room: each phase of its recovery, from the SIGKILL on."""
    from bench.failover import MARKS

    rows = s["rows"]
    heights = [max(3.0, 0.16 * len(r["timeline"]) + 1.2) for r in rows]
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(8.0, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    colors = plt.get_cmap("tab10").colors
    for ax, row in zip(axes[:, 0], rows, strict=True):
        rooms = sorted(row["timeline"], key=lambda t: t.get("listener_heard_s") or 1e9)
        for y, t in enumerate(rooms):
            start = 0.0
            for n, (key, label, _) in enumerate(MARKS):
                end = t.get(f"{key}_s")
                if end is None:
                    continue
                ax.barh(y, max(0.0, end - start), left=start, color=colors[n % 10], height=0.8, label=label)
                start = max(start, end)
        goal = 2.5 if row["rooms"] <= 10 else 4.0
        if row["heartbeat_interval_s"] == 1.0:
            ax.axvline(goal, color="black", linewidth=0.9, linestyle="--", label=f"goal: p99 {goal:g} s")
        ax.set_title(
            f"{row['rooms']} rooms, heartbeat {row['heartbeat_interval_s']:g} s: "
            "listener hears the new agent "
            f"p99 {row['listener_heard_s']['p99'] or 0:.2f} s",
            fontsize=9,
        )
        ax.set_yticks([])
        ax.set_ylabel("room", fontsize=8)
        ax.set_xlabel("s since SIGKILL", fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    handles: dict[str, Any] = {}
    for ax in axes[:, 0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    axes[0][0].legend(handles.values(), handles.keys(), fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_spread(s: dict[str, Any], path: Path) -> None:
    pools = list(s["capacities"])
    variants = (
        ("orchestrator_p2c", "orchestrator p2c + reservations"),
        ("orchestrator_least_loaded", "orchestrator least-loaded + reservations"),
        ("pure_p2c_no_reservations", "p2c, no reservations (pure)"),
        ("pure_least_loaded_no_reservations", "least-loaded, no reservations (pure)"),
    )
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.2
    x = np.arange(len(pools))
    for k, (key, label) in enumerate(variants):
        v = s.get(key)
        if not v:
            continue
        worst = max(v["runs"], key=lambda r: r["max_over_mean"] or 0)
        ax.bar(
            x + (k - 1.5) * width,
            [worst["occupancy"][p] for p in pools],
            width,
            label=f"{label}: max/mean {worst['max_over_mean']:.2f}",
        )
    ax.axhline(1.0, color="red", linewidth=0.8, linestyle="--", label="capacity")
    ax.axhline(
        s["rooms"] / sum(s["capacities"].values()),
        color="grey",
        linewidth=0.8,
        linestyle=":",
        label="ideal (even) occupancy",
    )
    ax.set_xticks(x)
    ax.set_xticklabels([f"{p}\n(capacity {s['capacities'][p]})" for p in pools], fontsize=7)
    ax.set_ylabel("rooms placed / capacity")
    ax.set_title("200 rooms in one burst into 4 pools (worst trial of each)", fontsize=9)
    ax.legend(fontsize=6, loc="upper left")
    ax.set_ylim(0, max(2.2, ax.get_ylim()[1]))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_scaleout(s: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    width = 0.35
    for k, (backend, label) in enumerate((("livekit", "real livekit-server"), ("standin", "Twirp stand-in"))):
        rows = [r for r in s["rows"] if r["backend"] == backend]
        xs = np.array([r["replicas"] for r in rows], dtype=float)
        ax.bar(xs + (k - 0.5) * width, [r["rooms_per_s"] for r in rows], width, label=label)
    ax.axhline(300, color="grey", linewidth=0.8, linestyle="--", label="goal, 1 replica")
    ax.set_xticks([1, 2, 3])
    ax.set_xlabel("orchestrator replicas (2-core machine)")
    ax.set_ylabel("rooms dispatched / s")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_liverooms(s: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for r in s["rows"]:
        pts = [(t, ms) for t, ms in r.get("samples", []) if ms is not None]
        if not pts:
            continue
        label = f"{r['live_rooms']:,} live rooms ({r['dispatched']}/{r['events']} dispatched)"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", markersize=2, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("s since the first event (100 events/s)")
    ax.set_ylabel("event → CreateDispatch, ms (log)")
    ax.set_title("Each event's latency over the run, by live rooms in the replica", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", markerscale=4)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_deadlines(s: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for r in s["rows"]:
        pts = r.get("samples", [])
        if not pts:
            continue
        label = f"{r['live_rooms']:,} live rooms ({r['measured']}/{r['events']} measured)"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", markersize=3, label=label)
    ax.axhline(s.get("goal_ms", 300), color="grey", linewidth=0.8, linestyle="--", label="goal: p99 300 ms")
    ax.set_xlabel(f"s since the first deadline ({s.get('rate', 30):g} deadlines/s)")
    ax.set_ylabel("deadline → fired, ms")
    ax.set_title("Each room's join-deadline lateness over the run, by live rooms in the replica", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, markerscale=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_sharing(s: dict[str, Any], path: Path) -> None:
    fig, (ax, lat) = plt.subplots(2, 1, figsize=(7.5, 6.4), sharex=True)
    for r in s["rows"]:
        for key, style in (("kill", "-"), ("join", ":"), ("term", "--")):
            k = r.get(key) or {}
            label = f"{r['live_rooms']:,} live rooms, {k.get('signal')}"
            pts = k.get("samples") or []
            if pts:
                ax.plot([p[0] for p in pts], [p[1] / r["live_rooms"] for p in pts], style, label=label)
            ev = [(t, ms) for t, ms in k.get("latency_samples") or [] if ms is not None]
            if ev:
                lat.plot([p[0] for p in ev], [p[1] for p in ev], ".", markersize=2, label=label)
    ttl = s.get("member_ttl_s", 3.0)
    for a in (ax, lat):
        a.axvline(ttl, color="grey", linewidth=0.8, linestyle=":", label=f"member_ttl_s = {ttl:g} s")
        a.axvline(0, color="black", linewidth=0.6)
        a.grid(alpha=0.3)
    ax.set_ylabel("live rooms tracked / all")
    ax.set_title("Takeover: a signal to one of three replicas, or a replica joining two", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    lat.set_yscale("log")
    lat.set_ylabel("new room's event → CreateDispatch, ms")
    lat.set_xlabel("s since the signal or the start (events published from 3 s before it)")
    lat.legend(fontsize=7, loc="upper right", markerscale=4)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


PLOTS = {
    "overhead": plot_overhead,
    "compare": plot_compare,
    "failover": plot_failover,
    "spread": plot_spread,
    "scaleout": plot_scaleout,
    "liverooms": plot_liverooms,
    "deadlines": plot_deadlines,
    "sharing": plot_sharing,
}


# ------------------------------------------------------------------------------------------------
# markdown
# ------------------------------------------------------------------------------------------------


def write(results: dict[str, Any], out: Path, json_path: Path, report_path: Path) -> None:
    date = results["date"]
    sections = results["sections"]
    images: dict[str, str] = {}
    for name, plot in PLOTS.items():
        if _ok(sections.get(name)):
            png = out / f"{date}-{name}.png"
            try:
                plot(sections[name], png)
                images[name] = os.path.relpath(png, report_path.parent)
            except Exception as exc:  # a broken plot must not lose the numbers
                sections[name]["plot_error"] = f"{type(exc).__name__}: {exc}"
    m = results["machine"]
    lines = [
        f"# Switchboard benchmarks — {date}",
        "",
        f"`make bench`, {'quick sizes' if results.get('quick') else 'full sizes'}, wall time "
        f"**{results['wall_s'] / 60:.1f} min** ({results['started']} → {results['finished']}). "
        f"Raw results: [`{json_path.name}`]({os.path.relpath(json_path, report_path.parent)}).",
        "",
        f"Machine: {m['nproc']} cores, {m['cpu_model']}, {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['nats_server']}, {m['livekit_server']}. **A shared 2-core VM**: other "
        f"engineers' test runs use the same CPUs (load average at start {m['loadavg_at_start'][0]:.2f}); "
        "heavy "
        "runs take `/tmp/switchboard-heavy.lock` so they do not overlap, but figures can still vary run to "
        "run "
        "(the NATS reference notes ~20 % between runs). Everything runs on 127.0.0.1, every process on the "
        "same machine, real `nats-server` and `livekit-server`.",
        "",
        *_reruns(results),
        "## Results against the goals",
        "",
        "| measure | goal | result | |",
        "|---|---|---|---|",
    ]
    for measure, goal, fig, met in verdicts(sections):
        lines.append(f"| {measure} | {goal} | {fig} | {met} |")
    lines += ["", *_details(sections, images), *_superseded(results)]
    report_path.write_text("\n".join(lines) + "\n")


def _superseded(results: dict[str, Any]) -> list[str]:
    """Earlier runs of a rerun failover section, so no attempt disappears from the report."""
    earlier = results.get("superseded", {}).get("failover")
    if not earlier:
        return []
    if isinstance(earlier, dict):
        earlier = [earlier]
    lines = [
        "## Earlier failover runs (same day, superseded by the rerun above)",
        "",
        "| run | heartbeat | rooms on the killed pool | recovered | p50 / p99 / max (s) | worker problems |",
        "|---|---|---|---|---|---|",
    ]
    for n, run in enumerate(earlier, 1):
        for r in run.get("rows", []):
            rs = r["recovery_s"]
            lines.append(
                f"| {n} | {r['heartbeat_interval_s']:g} s × 3 | {r['affected']} | {r['recovered']} | "
                f"{_f(rs['p50'])} / {_f(rs['p99'])} / {_f(rs['max'])} | "
                f"{'; '.join(r.get('worker_problems', [])) or '—'} |"
            )
    return [*lines, ""]


def _reruns(results: dict[str, Any]) -> list[str]:
    lines = []
    for r in results.get("reruns", []):
        if r.get("added") and set(r["added"]) == set(r["sections"]):
            lines.append(
                f"Added later: {', '.join(r['sections'])}, run alone at {r['started']} "
                f"({r['wall_s']:.0f} s): {r['note']} "
                f"Load average at its start: {r['loadavg_at_start'][0]:.2f}."
            )
        else:
            lines.append(
                f"Rerun of {', '.join(r['sections'])} at {r['started']} ({r['wall_s']:.0f} s): {r['note']} "
                f"Load average at its start: {r['loadavg_at_start'][0]:.2f}. "
                "Earlier runs are listed at the end."
            )
        lines.append("")
    return lines


def _details(sections: dict[str, Any], images: dict[str, str]) -> list[str]:
    from bench import (
        compare,
        deadlines,
        failover,
        footprint,
        listrooms,
        liverooms,
        overhead,
        scaleout,
        sharing,
        spread,
    )

    docs = {
        "scheduler": "Pure, in-process: `bench/scheduler_bench.py`'s `throughput()` — best short round of "
        "`schedule()` calls on a synthetic snapshot (4 agents × 5 regions, ~10 % of pools holding "
        "reservations, "
        "10 % of rooms with an excluded pool). `index` = the hot path (a `PoolIndex` per heartbeat "
        "snapshot); "
        "`list` = the snapshot list, feasibility recomputed per call.",
        "overhead": overhead.__doc__ or "",
        "compare": compare.__doc__ or "",
        "spread": spread.__doc__ or "",
        "failover": failover.__doc__ or "",
        "scaleout": scaleout.__doc__ or "",
        "footprint": footprint.__doc__ or "",
        "listrooms": listrooms.__doc__ or "",
        "liverooms": liverooms.__doc__ or "",
        "deadlines": deadlines.__doc__ or "",
        "sharing": sharing.__doc__ or "",
    }
    titles = {
        "scheduler": "1. Scheduler",
        "overhead": "2. Orchestrator overhead",
        "compare": "3. Switchboard path vs automatic dispatch",
        "spread": "4. Load spread",
        "failover": "5. Failover",
        "scaleout": "6. Scale-out",
        "footprint": "7. Footprint",
        "listrooms": "8. ListRooms: the cost of an anti-entropy resync pass",
        "liverooms": "9. Live rooms: the cost of the rooms a replica tracks, per event",
        "deadlines": "10. Deadlines: how late a room's timer fires, by live rooms",
        "sharing": "11. Replicas divide the rooms: shares, takeover, start-up",
    }
    out: list[str] = []
    for name, title in titles.items():
        s = sections.get(name)
        out += [f"## {title}", ""]
        doc = docs[name].strip()
        if name != "scheduler":
            doc = doc.split("\n\n", 1)[1] if "\n\n" in doc else doc
        out += [doc, ""]
        if not _ok(s):
            out += [f"**Did not complete**: {_status(s)}", ""]
            continue
        assert s is not None
        out += TABLES[name](s)
        if name in images:
            out += ["", f"![{title}]({images[name]})"]
        out += ["", f"Section wall time: {s.get('wall_s', 0):.0f} s.", ""]
    return out


def _t_scheduler(s: dict[str, Any]) -> list[str]:
    lines = ["| pools | strategy | index | index + to_dict | list |", "|---|---|---|---|---|"]
    for r in s["rows"]:
        lines.append(
            f"| {r['pools']:,} | {r['strategy']} | {r['index']:,.0f} | {r['index+dict']:,.0f} | "
            f"{r['list']:,.0f} |"
        )
    return lines


def _ms(d: dict[str, Any]) -> str:
    return f"{_f(d.get('p50'))} / {_f(d.get('p99'))} / {_f(d.get('max'))}"


def _t_overhead(s: dict[str, Any]) -> list[str]:
    lines = [
        "p50 / p99 / max, milliseconds.",
        "",
        "| rate | events | event → CreateDispatch span | event → consumer pickup | pickup → CreateDispatch "
        "| event → stand-in received the request | NATS floor: publish → fetch | NATS floor: publish → "
        "PubAck |",
        "|---|---|---|---|---|---|---|---|",
    ]
    floors = {r["rate"]: r for r in s["floor"]}
    for r in s["rates"]:
        f = floors.get(r["rate"], {})
        lines.append(
            f"| {r['rate']}/s (achieved {_f(r['achieved_rate'], '.0f')}) | {r['count']} | "
            f"**{_ms(r['event_to_create_dispatch_ms'])}** | {_ms(r['event_to_pickup_ms'])} | "
            f"{_ms(r['pickup_to_create_dispatch_ms'])} | {_ms(r['event_to_standin_arrival_ms'])} | "
            f"{_ms(f.get('pickup_ms', {}))} | {_ms(f.get('puback_ms', {}))} |"
        )
    missing = sum(r["missing"] + r["errors"] for r in s["rates"])
    lines += [
        "",
        f"Events not dispatched or not published: {missing}. Live rooms in the orchestrator after each "
        f"rate: {', '.join(str(r['live_rooms_after']) for r in s['rates'])} (they accumulate; what "
        "live rooms cost each event is section 9).",
    ]
    return lines


def _t_compare(s: dict[str, Any]) -> list[str]:
    lines = [
        "Seconds from the room's creation (server timestamp). p50 / p90 / p99 / max.",
        "",
        "| path | rooms | joined | first audio | agent seen by the listener | failures | double agents |",
        "|---|---|---|---|---|---|---|",
    ]
    for path, label in (("sb", "Switchboard"), ("auto", "automatic dispatch")):
        d = s[path]

        def q(x: dict[str, Any]) -> str:
            return " / ".join(_f(x.get(k), ".3f") for k in ("p50", "p90", "p99", "max"))

        lines.append(
            f"| {label} | {d['joined_s']['n']} | {q(d['joined_s'])} | {q(d['first_audio_s'])} | "
            f"{q(d['agent_seen_s'])} | {d['failures']} | {d['double_agents']} |"
        )
    lines += [
        "",
        "Ratio of medians (Switchboard / automatic): joined "
        f"**{_f(s.get('ratio_of_medians_joined'), '.3f')}**, "
        f"first audio **{_f(s.get('ratio_of_medians_first_audio'), '.3f')}**. Median paired difference in "
        "first "
        f"audio (same pair index): {_f(s.get('paired_first_audio_diff_s_median'), '.3f')} s. Switchboard's "
        "own "
        "part, event → dispatched (KV record): p50 "
        f"{_f(_get(s, 'sb', 'event_to_dispatched_s', 'p50'), '.4f')} s, "
        f"p99 {_f(_get(s, 'sb', 'event_to_dispatched_s', 'p99'), '.4f')} s.",
    ]
    return lines


def _t_spread(s: dict[str, Any]) -> list[str]:
    pools = list(s["capacities"])
    lines = [
        "Rooms placed per pool (capacity), worst trial of each variant by max/mean occupancy.",
        "",
        "| variant | "
        + " | ".join(f"{p} ({s['capacities'][p]})" for p in pools)
        + " | max/mean (each trial) | rooms over capacity |",
        "|---|" + "---|" * len(pools) + "---|---|",
    ]
    for key, label in (
        ("orchestrator_p2c", "orchestrator, p2c + reservations"),
        ("orchestrator_least_loaded", "orchestrator, least-loaded + reservations"),
        ("pure_p2c_reservations", "pure scheduler, p2c + reservations"),
        ("pure_least_loaded_reservations", "pure scheduler, least-loaded + reservations"),
        ("pure_p2c_no_reservations", "pure scheduler, p2c, no reservations"),
        ("pure_least_loaded_no_reservations", "pure scheduler, least-loaded, no reservations"),
    ):
        v = s.get(key)
        if not v:
            continue
        worst = max(v["runs"], key=lambda r: (r["over_capacity_rooms"], r["max_over_mean"] or 0))
        each = ", ".join(f"{x:.3f}" for x in v["max_over_mean_each"])
        lines.append(
            f"| {label} | "
            + " | ".join(str(worst["placed"][p]) for p in pools)
            + f" | {each} | {v['over_capacity_rooms_worst']} |"
        )
    p = s["orchestrator_p2c"]
    pure_ok = not s["pure_p2c_reservations"]["any_over_capacity"]
    if (p["any_over_capacity"] or s["orchestrator_least_loaded"]["any_over_capacity"]) and pure_ok:
        lines += [
            "",
            "The pure scheduler with the same reservations never overfills a pool; the orchestrator does. "
            "One replica decides up to 64 rooms concurrently (the consumer's concurrency); "
            "`Reconciler._commit` takes a hold in the room index (`RoomIndex.hold`) before awaiting the "
            "CAS write that records its choice, and `RoomIndex.reserved` counts a placed room until a "
            "heartbeat lists its dispatch: look for a decision that does not see another's hold or "
            "reservation.",
        ]
    lines += [
        "",
        f"Burst published in ≤ {_f(p.get('burst_publish_s_max', 0) * 1000, '.0f')} ms (heartbeat interval "
        f"{s['heartbeat_interval_s']:g} s); all 200 rooms dispatched within "
        f"{_f(p.get('all_dispatched_s_max'))} s.",
    ]
    return lines


def _not_speaking(r: dict[str, Any]) -> str:
    n = r.get("not_speaking_at_kill", 0)
    return f"; {n} of {r['rooms']} not speaking when the kill came, left out" if n else ""


def _t_failover(s: dict[str, Any]) -> list[str]:
    lines = [
        "| heartbeat × beats | rooms on the killed pool (all rooms by pool before) | recovered "
        "| listener hears the new agent p50 / p99 / max (s) "
        "| speaking again (worker report) p50 / p99 / max (s) |",
        "|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        rs, h = r["recovery_s"], r["listener_heard_s"]
        lines.append(
            f"| {r['heartbeat_interval_s']:g} s × 3 | {r['affected']} "
            f"({', '.join(f'{p}: {n}' for p, n in r.get('pools_before_kill', {}).items())}"
            f"{_not_speaking(r)}) | "
            f"{r['recovered']} | {_f(h['p50'])} / {_f(h['p99'])} / {_f(h['max'])} | "
            f"{_f(rs['p50'])} / {_f(rs['p99'])} / {_f(rs['max'])} |"
        )
    with_phases = [r for r in s["rows"] if r.get("phases")]
    if with_phases:
        lines += [
            "",
            "Where the time goes: each phase's duration per room (from the mark before it; the first "
            "from the SIGKILL), p50 / max in seconds. Marks come from each room's own timeline: the "
            "orchestrator's history, the worker's job marks sent with its joined report (worker clock, "
            "the same machine here), and the listener.",
            "",
            "| phase | ends when | "
            + " | ".join(f"{r['heartbeat_interval_s']:g} s beats, {r['rooms']} rooms" for r in with_phases)
            + " |",
            "|---|---|" + "---|" * len(with_phases),
        ]
        from bench.failover import MARKS

        for _key, label, meaning in MARKS:
            cells = []
            for r in with_phases:
                p = r["phases"].get(label) or {}
                cells.append(f"{_f(p.get('p50'))} / {_f(p.get('max'))}")
            lines.append(f"| {label} | {meaning} | " + " | ".join(cells) + " |")
    for r in s["rows"]:
        if r.get("worker_problems"):
            lines += [
                "",
                f"Heartbeat {r['heartbeat_interval_s']:g} s row — worker logs: "
                f"{'; '.join(r['worker_problems'])}. "
                "livekit rtc SIGTERMs its own process on an FFI panic (a job's room connect whose "
                "ReadyForRoomEvent handshake did not come within its timeout, livekit/python-sdks#784, "
                "livekit/rust-sdks#1261): a surviving pool that takes several failed-over rooms at once on a "
                "loaded machine can die of it.",
            ]
    lines += [
        "",
        "For reference: LiveKit Cloud documents about 15 s for its own agent failover; self-hosted "
        "livekit-server v1.13.5 never re-dispatches a dead worker's jobs.",
    ]
    return lines


def _t_scaleout(s: dict[str, Any]) -> list[str]:
    lines = [
        f"{s['rooms_per_config']} rooms per configuration. CPU = CPU seconds per wall second of each "
        "process over the run (1.00 = one full core). Orchestrator CPU per room = the replicas' CPU "
        "seconds over the run / rooms dispatched (issue 15, goal 4: ≤ 1 ms; it does not depend on the "
        "machine's cores).",
        "",
        "| LiveKit API | replicas | rooms/s (all) | rooms/s (middle 80 %) | vs 1 replica | dispatched "
        "| orchestrator CPU per room | CPU per process |",
        "|---|---|---|---|---|---|---|---|",
    ]
    one = {r["backend"]: r["rooms_per_s"] for r in s["rows"] if r["replicas"] == 1}
    for r in s["rows"]:
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_util"].items())
        wall = r.get("wall_s") or r.get("last_dispatched_s") or 0.0
        replicas = sum(v for k, v in r["cpu_util"].items() if k.startswith("replica"))
        per_room = replicas * wall / r["dispatched"] * 1000 if r["dispatched"] else None
        base = one.get(r["backend"])
        lines.append(
            f"| {'livekit-server' if r['backend'] == 'livekit' else 'Twirp stand-in'} | {r['replicas']} | "
            f"{r['rooms_per_s']:.0f} | {_f(r['steady_rooms_per_s'], '.0f')} | "
            f"{_f(r['rooms_per_s'] / base if base else None, '.2f', '×')} | "
            f"{r['dispatched']}/{r['rooms']} | {_f(per_room, '.1f', ' ms')} | {cpu} |"
        )
    return lines


def _t_footprint(s: dict[str, Any]) -> list[str]:
    o, w = s["orchestrator"], s["worker"]
    lines = [
        f"Orchestrator (one replica; the room record used is {o['template_record_bytes']:,} bytes of JSON):",
        "",
        "| live rooms | RSS | PSS | per room in process (RSS / PSS) | KV bytes per room | index synced "
        "after start | idle CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in o["rows"]:
        per = (
            f"{_f(r.get('rss_kb_per_room'), '.1f')} / {_f(r.get('pss_kb_per_room'), '.1f')} kB"
            if "rss_kb_per_room" in r
            else "(baseline)"
        )
        kv = _f(r.get("kv_bytes_per_room"), ".0f", " B") if "kv_bytes_per_room" in r else "—"
        lines.append(
            f"| {r['rooms']:,} | {r['rss_kb'] / 1024:.0f} MB | {r['pss_kb'] / 1024:.0f} MB | {per} | {kv} | "
            f"{r['ready_s']:.1f} s | {r['idle_cpu']:.0%} |"
        )
    lines += [
        "",
        f"Worker (`scripts/measure-worker`, {w['executor']} executor, fresh run, {w['dispatches']} "
        "dispatches): "
        f"idle {w['idle_rss_mb']:.0f} MB RSS / {w['idle_pss_mb']:.0f} MB PSS ({w['idle_processes']} "
        "process), "
        f"+{w['per_job_rss_mb']:.1f} MB RSS / +{w['per_job_pss_mb']:.1f} MB PSS per active job "
        f"({w['jobs_measured']} jobs with listeners); start → registered {w['start_to_registered_s']:.1f} s, "
        f"→ joined p50 {w['joined_p50_s']:.2f} s, → voice p50 {w['voice_p50_s']:.2f} s.",
    ]
    return lines


def _pc(share: float, digits: int) -> str:
    return f"{share * 100:.{digits}f} %"


def _round100(x: float | None) -> float | None:
    return None if x is None else round(x, -2)


def _t_listrooms(s: dict[str, Any]) -> list[str]:
    rows = s["rows"]
    lines = [
        "Per call. CPU in ms of one core: ours = the call (JWT, HTTP, protobuf decode) + reading every "
        "room's name, sid and creation time; LiveKit = livekit-server's utime + stime, its idle rate "
        "subtracted. The response size is the HTTP body, which is the serialized ListRoomsResponse "
        "(`len(SerializeToString())`, equal; no Content-Encoding).",
        "",
        "| live rooms | wall p50 / p95 (ms) | calls | response | CPU ours: call + walk | CPU LiveKit "
        "| a pass every 5 s | `names=[one room]`: wall p50 / p95, CPU ours / LiveKit (ms) "
        "| livekit-server RSS, idle CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r.get("filtered") or {}
        walk = r["decode_and_walk_ms"] - r["decode_ms"]
        size = r["http_body_bytes"]
        same = "" if r["serialized_bytes"] == size else f" (serialized {r['serialized_bytes']:,} B)"
        lines.append(
            f"| {r['rooms']:,} | {r['wall_ms_p50']:.1f} / {r['wall_ms_p95']:.1f} | {r['calls']} | "
            f"{size / 1024:,.0f} KiB{same}, {_f(r['bytes_per_room'], '.0f')} B/room | "
            f"{r['client_cpu_ms']:.2f} + {walk:.2f} = {r['client_pass_cpu_ms']:.2f} | "
            f"{r['server_cpu_ms']:.2f} | {r['pass_cpu_ms']:.1f} ms = **{_pc(r['core_share_at_5s'], 2)}** "
            "of a core | "
            f"{_f(f.get('wall_ms_p50'))} / {_f(f.get('wall_ms_p95'))}, {_f(f.get('client_cpu_ms'))} / "
            f"{_f(f.get('server_cpu_ms'))} | {_f(r['server_rss_mb'], ',.0f')} MB, "
            f"{r['server_idle_cores']:.2f} cores |"
        )
    if not rows:
        return lines
    big, small = rows[-1], rows[0]
    fit = s.get("fit") or {}
    fb, fs = big.get("filtered") or {}, small.get("filtered") or {}
    at = fit.get("interval_s_at", {})
    text = (
        f"At {big['rooms']:,} rooms a pass every 5 s costs {big['pass_cpu_ms']:.0f} ms of CPU "
        f"({big['server_cpu_ms']:.0f} ms in livekit-server, {big['client_pass_cpu_ms']:.0f} ms in the "
        f"replica holding the lease), **{_pc(big['core_share_at_5s'], 1)} of one core**"
        + (" (within the 2 % target)" if big["core_share_at_5s"] <= 0.02 else " (over the 2 % target)")
        + f"; the call takes {big['wall_ms_p50']:.0f} ms (p95 {big['wall_ms_p95']:.0f}) and moves "
        f"{big['http_body_bytes'] / 1e6:.1f} MB."
    )
    if fit.get("ms_per_1000_rooms") and fit.get("rooms_at_target"):
        per = fit["ms_per_1000_rooms"]
        limit = _f(_round100(fit["rooms_at_target"]), ",.0f")
        text += (
            f" The cost is linear in the rooms, ≈ {per:.1f} ms per 1,000 (least squares over the sizes), "
            f"so a 5 s interval stays within 2 % of a core up to about **{limit} rooms**; beyond that "
            "the interval should grow with the room count, interval ≈ cost / 0.02 ≈ "
            f"{per / 1000 / 0.02:.2f} s per 1,000 rooms (20,000 rooms: {_f(at.get('20000'), '.0f')} s, "
            f"50,000: {_f(at.get('50000'), '.0f')} s, 100,000: {_f(at.get('100000'), '.0f')} s)."
        )
    if fb.get("server_cpu_ms") is not None and fs.get("server_cpu_ms") is not None:
        grows = fb["server_cpu_ms"] > 3 * max(fs["server_cpu_ms"], 0.05)
        text += (
            f" The per-room existence check of the dispatch path (`names=[one room]`) costs "
            f"{fb['server_cpu_ms']:.1f} ms of LiveKit CPU and {fb['wall_ms_p50']:.1f} ms wall at "
            f"{big['rooms']:,} rooms against {fs['server_cpu_ms']:.1f} ms at {small['rooms']:,}"
        )
        if grows:
            text += (
                ": it is not a lookup — livekit-server's single-node store answers a filtered ListRooms by "
                "walking every room (`LocalStore.ListRooms` in livekit/livekit `pkg/service/localstore.go` "
                "tests each room with `funk.Contains(names, …)`), so at 100 dispatches/s it alone would take "
                f"{fb['server_cpu_ms'] * 100 / 1000:.1f} of a LiveKit core."
            )
        else:
            text += "."
    lines += ["", text]
    lines += [
        "",
        "Single livekit-server with its in-memory room store (no Redis; a multi-node deployment lists "
        "rooms from Redis, not measured here). For scale: the rooms themselves, listed or not, cost "
        f"livekit-server {big['server_idle_cores']:.2f} cores and {_f(big['server_rss_mb'], ',.0f')} MB at "
        f"{big['rooms']:,} rooms (last column). "
        f"Rooms were created at {_f(_get(rows, len(rows) - 1, 'create_per_s'), '.0f')}/s "
        f"({s['create_concurrency']} CreateRoom in flight).",
    ]
    for note in s.get("notes", []):
        lines += ["", f"**Not measured as planned**: {note}"]
    return lines


def _t_liverooms(s: dict[str, Any]) -> list[str]:
    lines = [
        f"{s['events_per_size']:,} events per size at {s['rate']:g}/s; a fresh replica per size. "
        "Latency: publish → the stand-in receives CreateDispatch (ms; ≥ marks a lower bound: some "
        "events were not dispatched when the wait ended). Idle CPU: the synced replica over 5 s before "
        "the events (1.00 = one core). CPU per room: the replica's CPU over the event phase / rooms "
        "dispatched, gross and net of the idle rate. Memory: RSS / PSS of the replica minus the "
        "0-room replica's, per live room. Cores busy during the events: the replica / the whole "
        "machine (other jobs included).",
        "",
        "| live rooms | event → CreateDispatch p50 / p99 (max) ms | p99 of each third of the events "
        "| p99 vs 0 rooms | dispatched "
        "| idle CPU | CPU ms per room dispatched (net) | RSS / PSS per room | index synced after start "
        "| cores busy during the events |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        if "error" in r:
            lines.append(f"| {r['live_rooms']:,} | error: {r['error'][:200]} | | | | | | | | |")
            continue
        ge = _ge(r)
        ratio = "(baseline)" if r["live_rooms"] == 0 else f"{ge}×{_f(r.get('ratio_p99_vs_0'))}"
        mem = (
            f"{_f(r['rss_kb_per_room'], '.1f')} / {_f(r['pss_kb_per_room'], '.1f')} kB"
            if r.get("rss_kb_per_room") is not None
            else f"({r['rss_kb'] / 1024:.0f} / {r['pss_kb'] / 1024:.0f} MB)"
        )
        util = r.get("cpu_util") or {}
        lines.append(
            f"| {r['live_rooms']:,} | {ge}{_f(r['p50_ms'])} / **{ge}{_f(r['p99_ms'])}** "
            f"({ge}{_f(r['max_ms'], '.0f')}) | "
            f"{' / '.join(_f(w, '.1f') for w in r.get('p99_windows_ms') or []) or '—'} | "
            f"{ratio} | {r['dispatched']}/{r['events']} | "
            f"{r['idle_cpu']:.2f} | {_f(r.get('cpu_ms_per_room'))} ({_f(r.get('cpu_ms_per_room_net'))}) | "
            f"{mem} | {r['ready_s']:.1f} s | {_f(util.get('replica'))} / {_f(util.get('machine'))} |"
        )
    r99, lb = s.get("ratio_p99"), "≥ " if s.get("ratio_lower_bound") else ""
    lines += [
        "",
        f"p99 with {s.get('ratio_p99_rooms') or 0:,} live rooms / p99 with 0: **{lb}×{_f(r99)}** "
        f"(goal ≤ ×{s.get('goal_ratio', 1.2):g}). The live rooms' jobs are listed by "
        f"{s['jobs_per_worker']:,}-job stand-in workers of one pool (the room record copied is "
        f"{s['template_record_bytes']:,} bytes of JSON).",
    ]
    for note in s.get("notes", []):
        lines += ["", f"**Not measured as planned**: {note}"]
    return lines + _profiles()


PROFILES = Path(__file__).resolve().parent / "results"
PROFILE_ROWS = 16


def _profile_shares(path: Path) -> tuple[str, dict[str, str]]:
    """(the profile's first paragraph, {function: inclusive share}) of a ``bench.profile`` file."""
    lines = path.read_text().splitlines()
    intro = next((line for line in lines[1:] if line.strip()), "")
    shares: dict[str, str] = {}
    for line in lines:
        if line.startswith("Own time"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2 and cells[0].endswith("%"):
            shares[cells[1]] = cells[0]
    return intro, shares


def _profiles() -> list[str]:
    """Where a replica's CPU goes per room (issue 15, goal 4: the profile before any cut), from
    the committed ``bench.profile`` runs at 0 and 100,000 live rooms."""
    found = [(n, PROFILES / f"profile-{n}.md") for n in (0, 100_000)]
    found = [(n, p) for n, p in found if p.exists()]
    if not found:
        return []
    read = {n: _profile_shares(p) for n, p in found}
    first = read[found[0][0]][1]
    lines = [
        "",
        "**Where the replica's CPU goes** (py-spy, `python -m bench.profile`; share of the samples "
        "in the function or what it calls; full tables: "
        + ", ".join(f"[`{p.name}`](results/{p.name})" for _, p in found)
        + "):",
        "",
        "| function | " + " | ".join(f"{n:,} live rooms" for n, _ in found) + " |",
        "|---|" + "---|" * len(found),
    ]
    for fn in list(first)[1:PROFILE_ROWS]:  # the first row is the process's main loop: 100 %
        lines.append(f"| {fn} | " + " | ".join(read[n][1].get(fn, "—") for n, _ in found) + " |")
    lines += ["", *(f"{n:,} live rooms: {read[n][0]}" for n, _ in found)]
    return lines


def _t_deadlines(s: dict[str, Any]) -> list[str]:
    lines = [
        f"{s['events_per_size']:,} rooms per size at {s['rate']:g}/s, join deadline "
        f"{s['join_deadline_s']:g} s, a fresh replica per size. Lateness: the step's `at` − the "
        "deadline (ms; ≥ marks a lower bound: some deadlines had not fired when the wait ended). "
        "Seen by the driver: deadline → the driver receiving the record written at that step. "
        "Firing sweeps apart: from one sweep that fired deadlines to the next (the `at` values "
        "cluster by sweep): the sweep's real period. Replica cores: its CPU over the phase (1.00 = one "
        "core).",
        "",
        "| live rooms | lateness p50 / p90 / **p99** (max) ms | measured | seen by the driver p50 / p99 ms "
        "| firing sweeps apart p50 / max ms | replica cores | index synced after start | p99 ≤ 300 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        if "error" in r:
            lines.append(f"| {r['live_rooms']:,} | error: {r['error'][:200]} | | | | | | |")
            continue
        ge = _ge(r)
        lines.append(
            f"| {r['live_rooms']:,} | {ge}{_f(r['p50_ms'], '.1f')} / {ge}{_f(r['p90_ms'], '.1f')} / "
            f"**{ge}{_f(r['p99_ms'], '.1f')}** ({ge}{_f(r['max_ms'], '.0f')}) | "
            f"{r['measured']}/{r['events']} | {_f(r.get('seen_p50_ms'), '.1f')} / "
            f"{_f(r.get('seen_p99_ms'), '.1f')} | {_f(r.get('sweep_gap_p50_ms'), '.0f')} / "
            f"{_f(r.get('sweep_gap_max_ms'), '.0f')} | {_f(r.get('replica_cores'))} | {r['ready_s']:.1f} s | "
            f"{_met(r.get('goal_met'))} |"
        )
    lines += [
        "",
        f"Worst p99: **{_f(s.get('worst_p99_ms'), '.1f')} ms** with {s.get('worst_p99_rooms') or 0:,} live "
        f"rooms (goal ≤ {s.get('goal_ms', 300):g} ms at every size). The sweep runs every 0.25 s after "
        "the previous one ends, so a due room waits up to a sweep interval plus the previous sweep's "
        "steps by design.",
    ]
    for note in s.get("notes", []):
        lines += ["", f"**Not measured as planned**: {note}"]
    return lines


def _t_sharing(s: dict[str, Any]) -> list[str]:
    ttl = s["member_ttl_s"]
    rows = s["rows"]
    lines = [
        f"Three replicas, `member_ttl_s` {ttl:g} s; new rooms' events at {s['event_rate']:g}/s for "
        f"{s['phase_s']:g} s per phase, the signal {s['signal_after_s']:g} s in; replicas polled every "
        f"~{s['poll_s']:g} s (the takeover times are the first poll that saw it). Memory: RSS of the "
        "replica's process group, its growth per tracked room (loaded − once the live rooms' workers "
        "beat; in brackets, from before those beats); one replica alone: a fresh replica synced over "
        "every room against the three's figure before the load. Slow consumer: nats-server closed the "
        "replica's connection for falling more than 64 MB behind (its log; the client connects again).",
        "",
        "**Shares and memory (three replicas)**",
        "",
        "| live rooms | replica | partitions | tracked | share | vs 1/3 | RSS: no rooms → beats → loaded "
        "| RSS (with beats) / PSS per tracked room |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "three" not in r:
            continue
        for name, x in r["three"]["replicas"].items():
            lines.append(
                f"| {r['live_rooms']:,} | {name} | {x['partitions']} | {x['tracked']:,} | {x['share']:.1%} | "
                f"{x['deviation']:+.1%} | {x['rss_kb_empty'] / 1024:.0f} → {x['rss_kb_beats'] / 1024:.0f} → "
                f"{x['rss_kb_loaded'] / 1024:.0f} MB | {_f(x['rss_kb_per_room'])} "
                f"({_f(x['rss_kb_per_room_with_beats'])}) / {_f(x['pss_kb_per_room'])} kB |"
            )
        a = r.get("alone")
        if a and a.get("ready_s") is not None:
            lines.append(
                f"| {r['live_rooms']:,} | one alone (fresh) | {a['synced_partitions']} | "
                f"{_f(a['tracked'], ',')} | 100 % | | → {a['rss_kb'] / 1024:.0f} MB | "
                f"{_f(a['rss_kb_per_room'])} kB (PSS: not comparable, fewer processes share its pages) |"
            )
    lines += [
        "",
        "**Takeover** (SIGKILL / SIGTERM to one of three replicas, or a fresh replica joining two; new "
        "rooms: their events published across it; lost = no CreateDispatch by the end of the wait; doubled "
        "= more than one dispatch id, `dispatched` entry or attempt; extra = CreateDispatch calls the "
        "stand-in counted beyond one per room; parked = new rooms a replica first put in "
        "`waiting_for_pool`)",
        "",
        "| live rooms | phase | replica: its rooms before (partitions) | all tracked again after | gone / "
        "ready after | tracked sum min / max | new rooms dispatched | lost / doubled / extra | parked "
        "| event → CreateDispatch p50 / p99 / max ms | events > 1 s | slow-consumer disconnects | cores "
        "busy: machine (replicas polled) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for k in (r.get("kill"), r.get("join"), r.get("term")):
            if not k:
                continue
            slow = ", ".join(f"{n} {c}" for n, c in (k.get("slow_consumer_disconnects") or {}).items())
            before = "new" if k["signal"] == "JOIN" else _f(k["target_tracked_before"], ",")
            lines.append(
                f"| {r['live_rooms']:,} | {k['signal']} | {k['target']}: {before} "
                f"({k['target_partitions']}) | **{_f(k['takeover_s'], '.2f', ' s')}** | "
                f"{_f(k['exit_s'], '.2f', ' s')} | {_f(k['speaking_min'], ',')} / "
                f"{_f(k['speaking_max'], ',')} | {k['dispatched']}/{k['rooms']} | "
                f"{k['lost']} / {k['doubled']} / {_f(k['extra_create_dispatch'], 'd')} | "
                f"{k['parked_for_pool']} | {_f(k['event_to_dispatch_p50_ms'], '.1f')} / "
                f"{_f(k['event_to_dispatch_p99_ms'], '.1f')} / {_f(k['event_to_dispatch_max_ms'], '.0f')} | "
                f"{k['events_over_1s']} | {slow or 'none'} | {_f(k.get('machine_cores_busy'))} "
                f"({' + '.join(f'{v:.2f}' for v in (k.get('replica_cores') or {}).values())}) |"
            )
    parked = [
        (r, k)
        for r in rows
        for k in (r.get("kill"), r.get("join"), r.get("term"))
        if k and k["parked_for_pool"]
    ]
    for r, k in parked:
        by = ", ".join(f"{n} {c}" for n, c in k.get("parked_by_replica", {}).items())
        lines += [
            "",
            f"{r['live_rooms']:,} live rooms, {k['signal']}: {k['parked_for_pool']} new rooms were first "
            f"parked in `waiting_for_pool` ({by}) and dispatched once a replica saw room in the pool again: "
            "what their latency above shows.",
        ]
    for r in rows:
        if "final_speaking" in r:
            lines += [
                "",
                f"{r['live_rooms']:,} live rooms: writes to pre-loaded rooms over the three phases: "
                f"**{r['moved_writes']}**; at the end the two replicas left tracked {r['final_speaking']:,} "
                f"speaking rooms of {r['live_rooms']:,} and {r['final_total']:,} rooms in all of "
                f"{r['expected_total']:,}.",
            ]
    lines += [
        "",
        "**Start-up, one fresh replica alone** (CPU: the process's CPU seconds from its start to /readyz, "
        "or to the end of the wait; messages: what nats-server had sent it by then over all its "
        "connections — records, heartbeats, membership)",
        "",
        "| live rooms | terminal records in KV | ready after | CPU by then | messages / MB sent to it "
        "| connections (slow-consumer disconnects) | tracked | RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cases = [(r.get("alone"), 0), (r.get("alone_terminal"), r.get("terminal_records", 0))]
        for a, t in cases:
            if not a:
                continue
            mb = a["nats_out_bytes_to_ready"]
            lines.append(
                f"| {r['live_rooms']:,} | {t:,} | {_ready(a)} | {_f(a['cpu_s_to_ready'], '.2f', ' s')} | "
                f"{_f(a['nats_out_msgs_to_ready'], ',')} / "
                f"{_f(mb / 1e6 if mb is not None else None, '.0f')} | "
                f"{a['nats_connections']} ({a['slow_consumer_disconnects']}) | {_f(a['tracked'], ',')} | "
                f"{a['rss_kb'] / 1024:.0f} MB |"
            )
    for r in rows:
        if "terminal_replayed" in r:
            replayed = r["terminal_replayed"]
            t = r["alone_terminal"]
            ready = (
                f"{_f(r['terminal_extra_ready_s'], '+.1f', ' s')} to ready"
                if t.get("ready_s") is not None
                else f"not ready after {t['limit_s']:.0f} s (without them: {_ready(r['alone'])})"
            )
            lines += [
                "",
                f"{r['live_rooms']:,} live rooms + {r['terminal_records']:,} terminal records: {ready}, "
                f"{_f(r['terminal_extra_cpu_s'], '+.2f')} s CPU, "
                f"{_f(r['terminal_extra_msgs'], '+,')} messages "
                f"and {_f((r['terminal_extra_bytes'] or 0) / 1e6, '+.0f')} MB sent to the replica, "
                f"{_f((r['terminal_extra_rss_kb'] or 0) / 1024, '+.0f')} MB RSS: terminal records **"
                f"{'replayed' if replayed else 'not replayed' if replayed is not None else 'n/a'}** at "
                "start-up.",
            ]
    for r in rows:
        problems = r.get("log_problems") or {}
        if problems:
            said = "; ".join(f"{name}: {p['count']}" for name, p in problems.items())
            lines += ["", f"Replica log lines at WARNING or worse ({r['live_rooms']:,} live rooms): {said}."]
    g = s.get("goals") or {}
    parts = (
        ("share", f"each tracks 1/3 ± {s['share_goal']:.0%}"),
        ("takeover", f"SIGKILL: taken over within member_ttl_s ({ttl:g} s)"),
        ("exactly_once", "nothing lost, no double agent, nothing moved"),
        ("memory", f"≤ {s['memory_goal_kb']:g} kB RSS per tracked room (worst of 3)"),
        ("terminal", "start-up does not replay terminal records"),
    )
    lines += ["", "| goal 2, part | |", "|---|---|"]
    lines += [f"| {text} | {_met(g.get(key))} |" for key, text in parts]
    for note in s.get("notes", []):
        lines += ["", f"**Not measured as planned**: {note}"]
    for r in rows:
        if "error" in r:
            lines += ["", f"**{r['live_rooms']:,} live rooms stopped early**: {r['error'][:600]}"]
    return lines


TABLES = {
    "scheduler": _t_scheduler,
    "overhead": _t_overhead,
    "compare": _t_compare,
    "spread": _t_spread,
    "failover": _t_failover,
    "scaleout": _t_scaleout,
    "footprint": _t_footprint,
    "listrooms": _t_listrooms,
    "liverooms": _t_liverooms,
    "deadlines": _t_deadlines,
    "sharing": _t_sharing,
}
