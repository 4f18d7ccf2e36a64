"""The report buffer is bounded: when NATS stays away, the oldest reports go first (and are counted)."""

from __future__ import annotations

from agent_worker.report_channel import JobReport
from agent_worker.report_queue import ReportQueue
from shared.messages import AgentStatus, utcnow


def _report(n: int) -> JobReport:
    status = AgentStatus(
        room=f"r{n}", dispatch_id=f"AD_{n}", attempt=1, pool="p", worker="w", state="joined", at=utcnow()
    )
    return JobReport(status=status, trace={})


async def test_drops_the_oldest_beyond_the_limit() -> None:
    queue = ReportQueue(limit=3)
    for n in range(5):
        queue.put(_report(n))
    assert len(queue) == 3 and queue.dropped == 2
    assert not await queue.flush(0.05)  # nothing can publish: flush says so instead of hanging


async def test_an_empty_queue_flushes_at_once() -> None:
    assert await ReportQueue(limit=3).flush(0.01)


def test_report_lines_round_trip() -> None:
    report = _report(1)
    assert JobReport.model_validate_json(report.model_dump_json()) == report
