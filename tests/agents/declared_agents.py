"""Agents declared every way livekit-agents allows (and some ways it does not), for unit tests of
``--entrypoint`` / ``--prewarm`` resolution. Nothing here connects anywhere."""

from __future__ import annotations

from livekit.agents import AgentServer, JobContext, JobProcess, JobRequest, WorkerOptions

PREWARM_CALLS: list[str] = []
SESSION_ENDS: list[JobContext] = []
NOT_AN_AGENT = 42


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()


def prewarm(proc: JobProcess) -> None:
    PREWARM_CALLS.append("prewarm")
    proc.userdata["model"] = object()


def other_prewarm(proc: JobProcess) -> None:
    PREWARM_CALLS.append("other_prewarm")
    proc.userdata["model"] = object()


def failing_prewarm(proc: JobProcess) -> None:
    raise RuntimeError("no model here")


async def async_prewarm(proc: JobProcess) -> None:
    proc.userdata["model"] = object()


def sync_entrypoint(ctx: JobContext) -> None:
    pass


async def on_request(req: JobRequest) -> None:
    await req.accept(name="Declared")


async def on_session_end(ctx: JobContext) -> None:
    SESSION_ENDS.append(ctx)


# WorkerOptions, as `cli.run_app(WorkerOptions(...))` agents have it (here as a module attribute).
options = WorkerOptions(
    entrypoint_fnc=entrypoint,
    prewarm_fnc=prewarm,
    request_fnc=on_request,
    agent_name="mine",
    load_threshold=0.5,
    num_idle_processes=2,
    port=9000,
    api_key="my-key",
    api_secret="my-very-secret",
)
bare_options = WorkerOptions(entrypoint_fnc=entrypoint)

# An AgentServer declared the livekit-agents way.
server = AgentServer(load_threshold=0.5, num_idle_processes=2, port=8081, api_secret="my-very-secret")
server.setup_fnc = prewarm


@server.rtc_session(agent_name="mine", on_request=on_request, on_session_end=on_session_end)
async def server_entrypoint(ctx: JobContext) -> None:
    await ctx.connect()


plain_server = AgentServer()
plain_server.rtc_session(entrypoint)

empty_server = AgentServer()  # no @server.rtc_session()

async_prewarm_server = AgentServer(setup_fnc=async_prewarm)
async_prewarm_server.rtc_session(entrypoint)
