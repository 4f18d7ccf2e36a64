"""Loading the user's agent: an async function, a livekit-agents WorkerOptions or AgentServer (with
or without prewarm and request_fnc), ``--prewarm``; where the prewarm runs; how a user's request_fnc
is consulted; and clear errors for everything else."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import JobExecutorType, JobProcess, JobRequest
from livekit.agents.job import JobAcceptArguments
from livekit.protocol import agent as agent_proto
from livekit.protocol import models
from typer.testing import CliRunner

import agent_worker.agent_server as agent_server
from agent_worker import default_agent
from agent_worker.agent_server import AcceptJob, PrepareJobProcess, UserSessionEnd
from agent_worker.entrypoints import (
    EntrypointError,
    describe,
    ignored_settings,
    load_entrypoint,
    resolve_agent,
)
from agent_worker.options import WorkerOptions, resolve_options
from agent_worker.prewarm import prewarm_at_start
from shared.config import SwitchboardConfig
from shared.dispatch_metadata import attempt_key, build_dispatch_metadata
from shared.messages import DispatchInfo
from switchboard.cli import app
from tests.agents import custom_agent, declared_agents

MOD = "tests.agents.declared_agents"
SECRET = "my-very-secret"


def _opts(**overrides: Any) -> WorkerOptions:
    return resolve_options(
        SwitchboardConfig(), agent="avatar", region="eu-central", pool="eu-central-a", capacity=2, **overrides
    )


# ------------------------------------------------------------------------------------------------
# shapes
# ------------------------------------------------------------------------------------------------


def test_default_is_the_speaking_agent() -> None:
    assert load_entrypoint(None) is default_agent.entrypoint
    assert resolve_agent(None).kind == "function"


def test_a_user_entrypoint_function_loads() -> None:
    agent = resolve_agent("tests.agents.custom_agent:entrypoint")
    assert agent.entrypoint is custom_agent.entrypoint and agent.kind == "function"
    assert (agent.prewarm, agent.request, agent.session_end) == (None, None, None)
    assert describe(agent, "avatar.eu-central-a", "thread") == (
        logging.INFO,
        "agent tests.agents.custom_agent:entrypoint",
    )


def test_worker_options_give_entrypoint_prewarm_and_request() -> None:
    agent = resolve_agent(f"{MOD}:options")
    assert agent.kind == "WorkerOptions"
    assert agent.entrypoint is declared_agents.entrypoint
    assert agent.prewarm is declared_agents.prewarm and agent.prewarm_source == "prewarm_fnc"
    assert agent.request is declared_agents.on_request
    assert set(ignored_settings(agent)) == {
        "agent_name",
        "load_threshold",
        "num_idle_processes",
        "port",
        "api_key",
        "api_secret",
    }


def test_worker_options_without_callbacks_take_nothing_else() -> None:
    agent = resolve_agent(f"{MOD}:bare_options")
    assert agent.entrypoint is declared_agents.entrypoint
    assert (agent.prewarm, agent.request) == (None, None)
    level, line = describe(agent, "avatar.eu-central-a", "thread")
    assert level == logging.INFO and "ignored" not in line


def test_agent_server_gives_its_rtc_session_setup_and_callbacks() -> None:
    agent = resolve_agent(f"{MOD}:server")
    assert agent.kind == "AgentServer"
    assert agent.entrypoint is declared_agents.server_entrypoint
    assert agent.prewarm is declared_agents.prewarm and agent.prewarm_source == "setup_fnc"
    assert agent.request is declared_agents.on_request
    assert agent.session_end is declared_agents.on_session_end
    assert set(ignored_settings(agent)) == {
        "agent_name",
        "load_threshold",
        "num_idle_processes",
        "port",
        "api_secret",
    }


def test_agent_server_without_prewarm_or_request() -> None:
    agent = resolve_agent(f"{MOD}:plain_server")
    assert agent.entrypoint is declared_agents.entrypoint
    assert (agent.prewarm, agent.request, agent.session_end) == (None, None, None)
    assert ignored_settings(agent) == {}


def test_a_module_alone_finds_its_agent_server_like_livekit_agents_does() -> None:
    agent = resolve_agent(MOD)
    assert agent.reference == f"{MOD}:server" and agent.entrypoint is declared_agents.server_entrypoint


def test_the_ignored_settings_are_one_line_that_names_each_and_why_without_secrets() -> None:
    level, line = describe(resolve_agent(f"{MOD}:options"), "avatar.eu-central-a", "thread")
    assert level == logging.WARNING and "\n" not in line
    assert "agent_name='mine' (the pool registers as 'avatar.eu-central-a')" in line
    assert "load_threshold=0.5, num_idle_processes=2 (load and executors are the pool's" in line
    assert "port=9000 (the pool's probes" in line
    assert "api_key, api_secret (the worker's LIVEKIT_URL" in line
    assert SECRET not in line and "my-key" not in line
    assert "prewarm() from prewarm_fnc (once per worker process, shared by its job threads)" in line
    _, line = describe(resolve_agent(f"{MOD}:options"), "avatar.eu-central-a", "process")
    assert "prewarm() from prewarm_fnc (in each job process)" in line


def test_prewarm_option_adds_or_replaces_the_prewarm() -> None:
    added = resolve_agent(f"{MOD}:entrypoint", f"{MOD}:prewarm")
    assert added.prewarm is declared_agents.prewarm and added.prewarm_source == f"--prewarm {MOD}:prewarm"
    replaced = resolve_agent(f"{MOD}:server", f"{MOD}:other_prewarm")
    assert replaced.prewarm is declared_agents.other_prewarm
    assert ignored_settings(replaced)["prewarm"] is declared_agents.prewarm
    assert "its prewarm prewarm() (--prewarm replaces it)" in describe(replaced, "a.p", "thread")[1]


@pytest.mark.parametrize(
    ("reference", "prewarm", "problem"),
    [
        (":entrypoint", None, "must look like"),
        ("tests.agents.custom_agent", None, "declares no livekit-agents AgentServer"),
        ("no.such.module:entrypoint", None, "cannot import"),
        ("tests.agents.custom_agent:missing", None, "has no attribute"),
        ("tests.agents.custom_agent:RATE", None, "is an object of type int: name an async function"),
        (f"{MOD}:sync_entrypoint", None, r"is a plain \(not async\) function"),
        (
            f"{MOD}:empty_server",
            None,
            r"AgentServer with no entrypoint: register one with @server.rtc_session",
        ),
        (f"{MOD}:async_prewarm_server", None, "its setup_fnc is an async function"),
        (f"{MOD}:entrypoint", MOD, "must look like 'package.module:function'"),
        (f"{MOD}:entrypoint", f"{MOD}:NOT_AN_AGENT", "must be a function taking a JobProcess"),
        (f"{MOD}:entrypoint", f"{MOD}:async_prewarm", "async function: livekit-agents calls the prewarm"),
        (f"{MOD}:entrypoint", "no.such.module:prewarm", "prewarm 'no.such.module:prewarm': cannot import"),
    ],
)
def test_bad_references_say_why(reference: str, prewarm: str | None, problem: str) -> None:
    with pytest.raises(EntrypointError, match=problem):
        resolve_agent(reference, prewarm)


# ------------------------------------------------------------------------------------------------
# where the prewarm runs
# ------------------------------------------------------------------------------------------------


def _proc(executor: JobExecutorType) -> JobProcess:
    return JobProcess(executor_type=executor, user_arguments=None, http_proxy=None)


def test_job_threads_share_one_prewarm_per_worker_process() -> None:
    declared_agents.PREWARM_CALLS.clear()
    prewarmed = prewarm_at_start(f"{MOD}:server", None, "thread")
    setup = PrepareJobProcess(f"{MOD}:server", prewarmed=prewarmed)
    first, second = _proc(JobExecutorType.THREAD), _proc(JobExecutorType.THREAD)
    setup(first)
    setup(second)
    assert declared_agents.PREWARM_CALLS == ["prewarm"]
    assert first.userdata["model"] is second.userdata["model"]
    first.userdata["mine"] = 1  # each job's dict is its own
    assert "mine" not in second.userdata


def test_a_job_process_runs_ours_then_the_users_prewarm(monkeypatch: pytest.MonkeyPatch) -> None:
    declared_agents.PREWARM_CALLS.clear()
    monkeypatch.setattr(
        agent_server, "setup_telemetry", lambda *_a: declared_agents.PREWARM_CALLS.append("ours")
    )
    proc = _proc(JobExecutorType.PROCESS)
    PrepareJobProcess(f"{MOD}:entrypoint", f"{MOD}:other_prewarm")(proc)
    assert declared_agents.PREWARM_CALLS == ["ours", "other_prewarm"]
    assert "model" in proc.userdata


def test_setup_and_session_end_travel_to_job_processes() -> None:
    # The process executor pickles them: they carry references, not the user's objects.
    for fnc in (PrepareJobProcess(f"{MOD}:server", f"{MOD}:other_prewarm"), UserSessionEnd(f"{MOD}:server")):
        assert pickle.loads(pickle.dumps(fnc)) == fnc


async def test_the_users_on_session_end_runs_by_reference() -> None:
    declared_agents.SESSION_ENDS.clear()
    ctx: Any = object()  # only handed on
    await UserSessionEnd(f"{MOD}:server")(ctx)
    (ended,) = declared_agents.SESSION_ENDS
    assert ended is ctx


def test_a_prewarm_that_raises_fails_the_start_in_this_process() -> None:
    with pytest.raises(EntrypointError, match=r"failed: RuntimeError: no model here"):
        prewarm_at_start(f"{MOD}:entrypoint", f"{MOD}:failing_prewarm", "thread")


def test_the_process_executor_checks_the_prewarm_in_a_fresh_process() -> None:
    prewarm_at_start(f"{MOD}:server", None, "process")  # passes, and loads nothing here
    with pytest.raises(EntrypointError, match=r"failed: RuntimeError: no model here"):
        prewarm_at_start(f"{MOD}:entrypoint", f"{MOD}:failing_prewarm", "process")


def test_the_worker_command_exits_2_when_the_prewarm_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(tmp_path / "absent.yaml"))
    argv = ["worker", "--agent", "a", "--region", "eu-central", "--pool", "p"]
    result = CliRunner().invoke(
        app, [*argv, "--entrypoint", f"{MOD}:entrypoint", "--prewarm", f"{MOD}:failing_prewarm"]
    )
    assert result.exit_code == 2, result.output
    assert "switchboard worker: prewarm --prewarm" in result.output
    assert "RuntimeError: no model here" in result.output
    result = CliRunner().invoke(app, [*argv, "--entrypoint", f"{MOD}:NOT_AN_AGENT"])
    assert result.exit_code == 2 and "is an object of type int" in result.output


# ------------------------------------------------------------------------------------------------
# the user's request_fnc
# ------------------------------------------------------------------------------------------------


class Answers:
    def __init__(self) -> None:
        self.accepted: list[JobAcceptArguments] = []
        self.rejected = 0

    def request(self, user_metadata: str = '{"persona": "calm"}') -> JobRequest:
        info = DispatchInfo(
            room="room-1",
            attempt=1,
            pool="eu-central-a",
            region="eu-central",
            agent="avatar",
            key=attempt_key("room-1", 1),
        )
        job = agent_proto.Job(
            id="AJ_test",
            room=models.Room(name="room-1"),
            metadata=build_dispatch_metadata(user_metadata, info),
        )

        async def on_accept(args: JobAcceptArguments) -> None:
            self.accepted.append(args)

        async def on_reject(_terminate: bool) -> None:
            self.rejected += 1

        return JobRequest(job=job, on_accept=on_accept, on_reject=on_reject)

    @property
    def only(self) -> JobAcceptArguments:
        assert self.rejected == 0 and len(self.accepted) == 1
        return self.accepted[0]


POOL_ATTRIBUTES = {
    "switchboard.pool": "eu-central-a",
    "switchboard.region": "eu-central",
}


def _has_pool_attributes(args: JobAcceptArguments) -> bool:
    attributes = args.attributes or {}
    return all(attributes[k] == v for k, v in POOL_ATTRIBUTES.items()) and "switchboard.worker" in attributes


async def test_without_a_user_request_fnc_jobs_are_accepted_with_pool_attributes() -> None:
    answers = Answers()
    await AcceptJob(_opts())(answers.request())
    assert answers.only.name == "avatar" and answers.only.identity == "agent-AJ_test"
    assert _has_pool_attributes(answers.only)


async def test_a_user_accept_names_the_participant_but_identity_and_pool_labels_stay_ours(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    async def user(req: JobRequest) -> None:
        seen.append(req.job.metadata)
        await req.accept(
            name="Ornina",
            identity="ornina",
            metadata="face=1",
            attributes={"persona": "calm", "switchboard.pool": "spoofed", "lk.agent.name": "spoofed"},
        )

    answers = Answers()
    await AcceptJob(_opts(), user)(answers.request())
    assert seen == ['{"persona": "calm"}']  # the user's metadata, not our reserved part
    args = answers.only
    assert (args.name, args.metadata, args.identity) == ("Ornina", "face=1", "agent-AJ_test")
    assert _has_pool_attributes(args) and (args.attributes or {})["persona"] == "calm"
    assert "lk.agent.name" not in (args.attributes or {})  # livekit-agents sets it to the pool's
    assert "request_fnc sets identity 'ornina': ignored" in caplog.text


async def reject(req: JobRequest) -> None:
    await req.reject()


async def fail(req: JobRequest) -> None:
    raise RuntimeError("boom")


async def say_nothing(req: JobRequest) -> None:
    pass


async def hang(req: JobRequest) -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("user", "logged"),
    [
        (reject, "rejected the job for room room-1: accepting it anyway"),
        (fail, "request_fnc failed for room room-1"),
        (say_nothing, "returned without an answer for room room-1: accepting the job anyway"),
        (hang, "gave no answer within 0.1s for room room-1: accepting the job anyway"),
    ],
)
async def test_the_job_is_accepted_whatever_the_user_request_fnc_does(
    user: Any, logged: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_server, "USER_REQUEST_BUDGET_S", 0.1)
    answers = Answers()
    async with asyncio.timeout(2):
        await AcceptJob(_opts(), user)(answers.request())
    assert answers.only.name == "avatar" and _has_pool_attributes(answers.only)
    assert logged in caplog.text


async def test_code_after_the_users_accept_still_runs() -> None:
    after = asyncio.Event()

    async def user(req: JobRequest) -> None:
        await req.accept(name="Ornina")
        await asyncio.sleep(0.05)
        after.set()

    answers = Answers()
    await AcceptJob(_opts(), user)(answers.request(json.dumps({})))
    assert answers.only.name == "Ornina"
    async with asyncio.timeout(2):
        await after.wait()
