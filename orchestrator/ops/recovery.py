"""The phases of a room's recovery after a failover, read from its own timeline (issue 16).

One reading for everyone who asks where the seconds went — ``switchboard drill kill-pool`` and the
bench's failover section: the orchestrator's history (decision, removal of the old agent, the new
dispatch, the joined and voice reports) and the worker's two job marks that its ``joined`` report
carries (job began, room connected; the worker's clock).
"""

from __future__ import annotations

from orchestrator.records import RoomRecord

# (mark, phase that ends at it, what the mark is), in the order a recovery passes them.
MARKS: tuple[tuple[str, str, str], ...] = (
    ("redispatch", "detect + decide", "the pool is judged dead and the room's redispatch decided"),
    ("removed", "old agent removed", "the old dispatch deleted and its agent confirmed gone"),
    ("dispatched", "CreateDispatch", "LiveKit answered the new dispatch"),
    ("job_began", "job assigned", "the job began on a worker (LiveKit assigned it, it was launched)"),
    ("connected", "room connect", "the job's room connect finished"),
    ("joined", "joined report", "the orchestrator has the worker's joined report"),
    ("speaking", "first audio", "the worker reported a listener hearing the new agent"),
)


def recovery_marks(rec: RoomRecord, since: float) -> dict[str, float | None]:
    """Each mark of :data:`MARKS` in seconds after ``since`` (unix time: the kill), None where the
    timeline does not have it (yet)."""
    after = [h for h in rec.history if h.at >= since]

    def first(event: str) -> float | None:
        return next((h.at - since for h in after if h.event == event), None)

    joined = next((h for h in after if h.event == "joined"), None)

    def worker_mark(key: str) -> float | None:
        value = joined.data.get(key) if joined is not None else None
        return float(value) - since if isinstance(value, int | float) else None

    def stamp(at: float | None) -> float | None:
        return at - since if at is not None and at >= since else None

    return {
        "redispatch": first("redispatch"),
        "removed": first("removed"),
        "dispatched": stamp(rec.dispatched_at),
        "job_began": worker_mark("started_at"),
        "connected": worker_mark("connected_at"),
        "joined": stamp(rec.joined_at),
        "speaking": stamp(rec.voice_at),
    }


def phase_durations(
    marks: dict[str, float | None], order: tuple[tuple[str, str, str], ...] = MARKS
) -> list[tuple[str, float | None]]:
    """``(phase, seconds)`` in order: each mark minus the last mark before it that is known (the
    first from ``since``); None for a mark not reached."""
    out: list[tuple[str, float | None]] = []
    previous = 0.0
    for mark, phase, _ in order:
        at = marks.get(mark)
        if at is None:
            out.append((phase, None))
            continue
        out.append((phase, max(0.0, at - previous)))
        previous = max(previous, at)
    return out
