"""The job wrapper: what runs around any agent entrypoint for every dispatch the worker takes.

It reads our part of the dispatch metadata (and hands the user's own string back to the agent),
continues the dispatcher's trace in one job span linked to livekit-agents' ``job_entrypoint``
span, watches the room for *joined* and *voice*, and reports ``left`` (with the reason) when the
job ends and ``error`` when the entrypoint fails. It is a picklable object because the process
executor ships it to the job process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass

from livekit.agents import JobContext
from livekit.api import DeleteRoomRequest, ListParticipantsRequest, ListRoomsRequest, ParticipantInfo
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from agent_worker.audio_stats import DEFAULT_LEVEL_THRESHOLD
from agent_worker.connect_gate import DispatchWithdrawn, gate_connect
from agent_worker.entrypoints import load_entrypoint
from agent_worker.job_reporter import JobFacts, JobReporter
from agent_worker.report_channel import ReportClient
from agent_worker.room_observer import RoomObserver
from shared.dispatch_metadata import read_dispatch_metadata
from shared.logs import log_context

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("switchboard.agent_worker")

MAX_WARNING_CHARS = 1024


@dataclass(frozen=True)
class JobRunner:
    pool: str
    worker: str
    report_socket: str
    entrypoint: str | None = None
    level_threshold: float = DEFAULT_LEVEL_THRESHOLD

    async def __call__(self, ctx: JobContext) -> None:
        read = read_dispatch_metadata(ctx.job.metadata)
        # The agent sees its own metadata, byte for byte, as if Switchboard were not there.
        ctx.job.metadata = read.user_metadata
        facts = JobFacts(
            room=ctx.job.room.name,
            dispatch_id=ctx.job.dispatch_id,
            attempt=read.info.attempt if read.info else 0,
            pool=self.pool,
            worker=self.worker,
            warnings=tuple(p[:MAX_WARNING_CHARS] for p in read.problems[:16]),
            state_region=read.info.state_region if read.info else None,
        )
        framework_span = trace.get_current_span().get_span_context()
        span = _tracer.start_span(
            "agent job",
            # Our trace, not livekit-agents' job trace: the dispatcher's context, or a new root.
            context=read.trace_context() or otel_context.Context(),
            kind=SpanKind.CONSUMER,
            links=[Link(framework_span)] if framework_span.is_valid else [],
            attributes={
                "switchboard.room": facts.room,
                "switchboard.dispatch_id": facts.dispatch_id,
                "switchboard.attempt": facts.attempt,
                "switchboard.pool": facts.pool,
                "switchboard.worker": facts.worker,
                "livekit.job_id": ctx.job.id,
            },
        )
        reporter = JobReporter(ReportClient(self.report_socket), facts, span)
        observer = RoomObserver(ctx.room, level_threshold=self.level_threshold)

        def job_scope() -> contextlib.AbstractContextManager[object]:
            scope = contextlib.ExitStack()
            scope.enter_context(trace.use_span(span, end_on_exit=False))
            scope.enter_context(
                log_context(
                    room=facts.room, pool=facts.pool, attempt=facts.attempt, dispatch_id=facts.dispatch_id
                )
            )
            return scope

        with job_scope():
            for problem in facts.warnings:
                log.warning("dispatch metadata problem (the agent runs anyway): %s", problem)
            watch = asyncio.create_task(_report_join_and_voice(observer, reporter), name="switchboard_watch")

            async def finish(reason: str) -> None:
                # Runs in livekit-agents' shutdown sequence (its own context), after the room
                # disconnected: re-enter the job's span and log fields.
                with job_scope():
                    watch.cancel()
                    try:
                        await watch
                    except asyncio.CancelledError:
                        pass
                    except Exception:
                        log.exception("watching the room failed; join/voice may be unreported")
                    await reporter.report("left", reason=reason or "job ended")
                    span.end()
                    await reporter.aclose()

            ctx.add_shutdown_callback(finish)
            try:
                agent = load_entrypoint(self.entrypoint)
                intended = read.info.sid if read.info else None
                gate_connect(
                    ctx,
                    functools.partial(dispatch_listed, ctx, intended),
                    functools.partial(in_its_room, ctx),
                    on_connected=reporter.connected,
                )
                await agent(ctx)
            except DispatchWithdrawn as withdrawn:
                log.info("not joining: %s", withdrawn)
                ctx.shutdown(reason="dispatch withdrawn")
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                await reporter.report("error", reason=f"agent entrypoint failed: {type(exc).__name__}: {exc}")
                raise


async def dispatch_listed(ctx: JobContext, intended_sid: str | None = None, timeout_s: float = 1.0) -> bool:
    """Whether the job's room is still there (this very room: its sid) and LiveKit still lists the
    job's dispatch (one ListRooms, one ListDispatch). Connecting to a room LiveKit deleted would
    create it again, empty: a ghost room with our agent in it. When LiveKit cannot say in time, yes:
    joining is the agent's job, and a replaced one is removed by the orchestrator anyway.

    ``intended_sid``, the room the dispatch was made for (our metadata): a job in a room of
    another sid comes from a dispatch that landed after its room was deleted, in a room LiveKit
    made for it. It is refused (:class:`DispatchWithdrawn`), and that room is deleted when no
    caller is in it (one ListParticipants, only then)."""
    room = ctx.job.room
    if intended_sid and room.sid and room.sid != intended_sid:
        emptied = await _delete_if_uncalled(ctx, timeout_s)
        raise DispatchWithdrawn(
            f"the dispatch was for the room of sid {intended_sid}, which ended; LiveKit made room "
            f"{room.sid} for it" + (" (deleted again: nobody is in it)" if emptied else "")
        )
    try:
        async with asyncio.timeout(timeout_s):
            rooms = await ctx.api.room.list_rooms(ListRoomsRequest(names=[room.name]))
            live = next((r for r in rooms.rooms if r.name == room.name), None)
            if live is None or (room.sid and live.sid and live.sid != room.sid):
                return False
            listed = await ctx.api.agent_dispatch.list_dispatch(room_name=room.name)
    except Exception as err:
        log.debug("could not check the dispatch before joining: %r", err)
        return True
    return any(d.id == ctx.job.dispatch_id for d in listed)


async def _delete_if_uncalled(ctx: JobContext, timeout_s: float) -> bool:
    """Delete the job's room when only agents (or nobody) are in it; whether it was deleted."""
    name = ctx.job.room.name
    try:
        async with asyncio.timeout(timeout_s):
            listed = await ctx.api.room.list_participants(ListParticipantsRequest(room=name))
            machines = (ParticipantInfo.Kind.AGENT, ParticipantInfo.Kind.EGRESS)
            if any(p.kind not in machines for p in listed.participants):
                return False
            await ctx.api.room.delete_room(DeleteRoomRequest(room=name))
    except Exception as err:
        log.debug("could not delete the room made for a stale dispatch: %r", err)
        return False
    return True


async def in_its_room(ctx: JobContext, timeout_s: float = 1.0) -> bool:
    """After connecting: whether the room joined is the job's (same sid). A room deleted between
    the check before and the connect is made again by the connect; if nobody else is in it, it is
    deleted again, so it never shows up as a room to serve."""
    expected = ctx.job.room.sid
    try:
        async with asyncio.timeout(timeout_s):
            joined = await ctx.room.sid
    except Exception as err:
        log.debug("could not read the joined room's sid: %r", err)
        return True
    if not expected or not joined or joined == expected:
        return True
    log.warning("joined room %s is not the job's room %s (it was deleted meanwhile)", joined, expected)
    if not ctx.room.remote_participants:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await ctx.api.room.delete_room(DeleteRoomRequest(room=ctx.job.room.name))
    return False


async def _report_join_and_voice(observer: RoomObserver, reporter: JobReporter) -> None:
    identity = await observer.joined()
    reporter.identity = identity
    await reporter.report("joined")
    level = await observer.voice()
    log.info("agent voice reached a listener (level %.3f of full scale)", level)
    await reporter.report("voice")
