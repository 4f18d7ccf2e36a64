"""Find the agent to run: the user's agent as it is written for livekit-agents, or the default agent.

``--entrypoint module:attr`` may name

- an async function taking a ``JobContext`` (the entrypoint alone);
- a livekit-agents ``WorkerOptions`` (``ServerOptions``): its ``entrypoint_fnc``, ``prewarm_fnc``
  and ``request_fnc``;
- a livekit-agents ``AgentServer``, declared the livekit-agents way (``server = AgentServer()``,
  ``@server.rtc_session(...)``, ``server.setup_fnc = prewarm``): its registered entrypoint, setup
  (prewarm), ``on_request`` and ``on_session_end``.

``--entrypoint module`` alone finds the module's ``AgentServer`` the way livekit-agents' own CLI
does (``app``, ``server`` or ``agent`` first). ``--prewarm module:function`` adds (or replaces) the
prewarm. Everything else a declaration sets belongs to the pool (agent_name, load, executors,
ports, LiveKit credentials): :func:`describe` names what is ignored, for one start-up log line.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from livekit.agents import AgentServer, JobContext, JobProcess, JobRequest, WorkerOptions

Entrypoint = Callable[[JobContext], Awaitable[None]]
Prewarm = Callable[[JobProcess], Any]
RequestFnc = Callable[[JobRequest], Awaitable[None]]
SessionEnd = Callable[[JobContext], Awaitable[None]]
Kind = Literal["function", "WorkerOptions", "AgentServer"]

log = logging.getLogger(__name__)

DEFAULT_ENTRYPOINT = "agent_worker.default_agent:entrypoint"
# livekit-agents' own discovery order for a module given without an attribute.
_PREFERRED_SERVER_NAMES = ("app", "server", "agent")


class EntrypointError(ValueError):
    """``--entrypoint`` or ``--prewarm`` cannot be used; the message says why."""


@dataclass(frozen=True)
class UserAgent:
    """What Switchboard takes from the user's agent; ``declaration`` is the object itself."""

    reference: str
    kind: Kind
    entrypoint: Entrypoint
    prewarm: Prewarm | None = None
    prewarm_source: str | None = None  # "setup_fnc", "prewarm_fnc" or the --prewarm reference
    request: RequestFnc | None = None
    session_end: SessionEnd | None = None
    declaration: Any = None
    replaced_prewarm: Prewarm | None = None  # the declaration's own, when --prewarm replaced it


def load_entrypoint(reference: str | None) -> Entrypoint:
    """The async function that runs one job (in a job thread or process)."""
    return resolve_agent(reference).entrypoint


@functools.lru_cache(maxsize=32)
def resolve_agent(reference: str | None, prewarm: str | None = None) -> UserAgent:
    """Import and take apart the user's agent. Cached: a job process resolves it once."""
    ref = reference or DEFAULT_ENTRYPOINT
    target = _import(ref, "entrypoint", allow_module=True)
    if inspect.ismodule(target):
        target, ref = _find_server(target, ref)
    agent = _take_apart(ref, target)
    if ref == DEFAULT_ENTRYPOINT and not prewarm:
        from agent_worker import default_agent

        # Its voices, made once per process before any job (default_agent.prewarm).
        agent = dataclasses.replace(
            agent, prewarm=default_agent.prewarm, prewarm_source="the default agent's"
        )
    if prewarm:
        fnc = _import(prewarm, "prewarm", allow_module=False)
        _check_prewarm(fnc, f"prewarm {prewarm!r}")
        agent = dataclasses.replace(
            agent, prewarm=fnc, prewarm_source=f"--prewarm {prewarm}", replaced_prewarm=agent.prewarm
        )
    return agent


def _import(ref: str, what: str, *, allow_module: bool) -> Any:
    module_name, sep, attr = ref.partition(":")
    shape = "'package.module:function'" + (" or 'package.module:server'" if allow_module else "")
    if not module_name or (sep and not attr) or (not sep and not allow_module):
        raise EntrypointError(f"{what} {ref!r} must look like {shape}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EntrypointError(f"{what} {ref!r}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # the module itself failed: say so, with the traceback in the log
        log.error("importing %s failed", module_name, exc_info=exc)
        raise EntrypointError(
            f"{what} {ref!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    if not sep:
        return module
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise EntrypointError(f"{what} {ref!r}: {module_name!r} has no attribute {attr!r}")
    return target


def _find_server(module: Any, ref: str) -> tuple[AgentServer, str]:
    names = [n for n in _PREFERRED_SERVER_NAMES if hasattr(module, n)] + sorted(vars(module))
    for name in names:
        if isinstance(getattr(module, name), AgentServer):
            return getattr(module, name), f"{ref}:{name}"
    raise EntrypointError(
        f"entrypoint {ref!r}: the module declares no livekit-agents AgentServer; "
        f"name the entrypoint instead, e.g. '{ref}:entrypoint'"
    )


def _take_apart(ref: str, target: Any) -> UserAgent:
    if isinstance(target, AgentServer):
        entrypoint = target._entrypoint_fnc
        if entrypoint is None:
            raise EntrypointError(
                f"entrypoint {ref!r} is an AgentServer with no entrypoint: "
                "register one with @server.rtc_session()"
            )
        prewarm = target.setup_fnc
        if prewarm is not None:
            _check_prewarm(prewarm, f"entrypoint {ref!r}: its setup_fnc")
        return UserAgent(
            reference=ref,
            kind="AgentServer",
            entrypoint=entrypoint,
            prewarm=prewarm,
            prewarm_source="setup_fnc" if prewarm else None,
            request=target._request_fnc,
            session_end=target._session_end_fnc,
            declaration=target,
        )
    if isinstance(target, WorkerOptions):
        prewarm = _given(target, "prewarm_fnc")
        if prewarm is not None:
            _check_prewarm(prewarm, f"entrypoint {ref!r}: its prewarm_fnc")
        return UserAgent(
            reference=ref,
            kind="WorkerOptions",
            entrypoint=target.entrypoint_fnc,
            prewarm=prewarm,
            prewarm_source="prewarm_fnc" if prewarm else None,
            request=_given(target, "request_fnc"),
            declaration=target,
        )
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__):
        return UserAgent(reference=ref, kind="function", entrypoint=cast(Entrypoint, target))
    raise EntrypointError(
        f"entrypoint {ref!r} is {_a(target)}: name an async function taking a JobContext, "
        "a livekit-agents AgentServer or a WorkerOptions"
    )


def _given(options: WorkerOptions, field: str) -> Any:
    """A WorkerOptions callback, or None when it is livekit-agents' default (accept all, no prewarm)."""
    value = getattr(options, field)
    default = next(f.default for f in dataclasses.fields(WorkerOptions) if f.name == field)
    return None if value is default else value


def _check_prewarm(fnc: Any, what: str) -> None:
    # livekit-agents calls setup_fnc synchronously: a coroutine function would never run.
    if not callable(fnc) or inspect.isclass(fnc):
        raise EntrypointError(f"{what} is {_a(fnc)}: it must be a function taking a JobProcess")
    if inspect.iscoroutinefunction(fnc) or inspect.iscoroutinefunction(type(fnc).__call__):
        raise EntrypointError(
            f"{what} is an async function: livekit-agents calls the prewarm synchronously, "
            "so it must be a plain function taking a JobProcess"
        )


def _a(value: Any) -> str:
    if inspect.isclass(value):
        return f"the class {value.__name__}"
    if callable(value) and not inspect.iscoroutinefunction(value):
        return f"a plain (not async) {type(value).__name__}"
    return f"an object of type {type(value).__name__}"


# ------------------------------------------------------------------------------------------------
# what the pool keeps for itself: one start-up line
# ------------------------------------------------------------------------------------------------

_CONNECTION = frozenset({"ws_url", "api_key", "api_secret", "http_proxy"})  # named, never printed
_WHY = {
    "load": "load and executors are the pool's: --capacity, --executor, --idle-executors, drain_grace_s",
    "probes": "the pool's probes: --health-host, --health-port",
    "livekit": "the worker's LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET apply",
    "other": "not used under a pool",
}
_GROUP = {
    "load_fnc": "load",
    "load_threshold": "load",
    "num_idle_processes": "load",
    "job_executor_type": "load",
    "drain_timeout": "load",
    "initialize_process_timeout": "load",
    "shutdown_process_timeout": "load",
    "session_end_timeout": "load",
    "job_memory_warn_mb": "load",
    "job_memory_limit_mb": "load",
    "multiprocessing_context": "load",
    "preload_modules": "load",
    "host": "probes",
    "port": "probes",
    "prometheus_port": "probes",
    "prometheus_multiproc_dir": "probes",
    "ws_url": "livekit",
    "api_key": "livekit",
    "api_secret": "livekit",
    "http_proxy": "livekit",
    "max_retry": "livekit",
}
# AgentServer keeps its settings in private attributes: (attribute, the name users wrote).
_SERVER_SETTINGS = (
    ("_agent_name", "agent_name"),
    ("_load_fnc", "load_fnc"),
    ("_load_threshold", "load_threshold"),
    ("_num_idle_processes", "num_idle_processes"),
    ("_job_executor_type", "job_executor_type"),
    ("_drain_timeout", "drain_timeout"),
    ("_initialize_process_timeout", "initialize_process_timeout"),
    ("_shutdown_process_timeout", "shutdown_process_timeout"),
    ("_session_end_timeout", "session_end_timeout"),
    ("_job_memory_warn_mb", "job_memory_warn_mb"),
    ("_job_memory_limit_mb", "job_memory_limit_mb"),
    ("_mp_ctx_str", "multiprocessing_context"),
    ("_preload_modules", "preload_modules"),
    ("_host", "host"),
    ("_port", "port"),
    ("_prometheus_port", "prometheus_port"),
    ("_prometheus_multiproc_dir", "prometheus_multiproc_dir"),
    ("_ws_url", "ws_url"),
    ("_api_key", "api_key"),
    ("_api_secret", "api_secret"),
    ("_http_proxy", "http_proxy"),
    ("_max_retry", "max_retry"),
    ("_permissions", "permissions"),
    ("_log_level", "log_level"),
    ("_server_type", "type"),
    ("_simulation_end_fnc", "on_simulation_end"),
)
_OPTIONS_TAKEN = frozenset({"entrypoint_fnc", "prewarm_fnc", "request_fnc"})


def ignored_settings(agent: UserAgent) -> dict[str, Any]:
    """Settings of the user's declaration that differ from livekit-agents' defaults, which the pool
    decides instead (the worker's environment counts as default: ``AgentServer()`` reads it too)."""
    decl = agent.declaration
    changed: dict[str, Any] = {}
    if isinstance(decl, AgentServer):
        reference = AgentServer()
        for attr, name in _SERVER_SETTINGS:
            value = getattr(decl, attr, None)
            if value != getattr(reference, attr, None) and not (name == "agent_name" and not value):
                changed[name] = value
    elif isinstance(decl, WorkerOptions):
        reference_opts = WorkerOptions(entrypoint_fnc=decl.entrypoint_fnc)
        for f in dataclasses.fields(WorkerOptions):
            if f.name not in _OPTIONS_TAKEN and getattr(decl, f.name) != getattr(reference_opts, f.name):
                changed[f.name] = getattr(decl, f.name)
    if agent.replaced_prewarm is not None:
        changed["prewarm"] = agent.replaced_prewarm
    return changed


def describe(agent: UserAgent, pool_agent_name: str, executor: str) -> tuple[int, str]:
    """The one start-up line: what runs, and which settings of the declaration the pool ignores."""
    used = [] if agent.kind == "function" else [f"entrypoint {_name(agent.entrypoint)}"]
    if agent.prewarm is not None:
        where = (
            "once per worker process, shared by its job threads"
            if executor == "thread"
            else "in each job process"
        )
        used.append(f"prewarm {_name(agent.prewarm)} from {agent.prewarm_source} ({where})")
    if agent.request is not None:
        used.append(
            f"request_fnc {_name(agent.request)} (consulted for the participant's name, metadata and "
            "attributes; the job is always accepted)"
        )
    if agent.session_end is not None:
        used.append(f"on_session_end {_name(agent.session_end)}")
    head = f"agent {agent.reference}" + (f" ({agent.kind}: {', '.join(used)})" if used else "")
    changed = ignored_settings(agent)
    if not changed:
        return logging.INFO, head
    groups: dict[str, list[str]] = {}
    for name, value in changed.items():
        if name == "agent_name":
            groups.setdefault("agent_name", []).append(f"agent_name={value!r}")
        elif name == "prewarm":
            groups.setdefault("prewarm", []).append(f"its prewarm {_name(value)}")
        else:
            shown = name if name in _CONNECTION else f"{name}={_short(value)}"
            groups.setdefault(_GROUP.get(name, "other"), []).append(shown)
    why = {
        **_WHY,
        "agent_name": f"the pool registers as {pool_agent_name!r}",
        "prewarm": "--prewarm replaces it",
    }
    parts = [f"{', '.join(items)} ({why[group]})" for group, items in groups.items()]
    return logging.WARNING, f"{head}; ignored, the pool decides these: " + "; ".join(parts)


def _name(fnc: Any) -> str:
    return str(getattr(fnc, "__qualname__", None) or type(fnc).__name__) + "()"


def _short(value: Any) -> str:
    if callable(value):
        return _name(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
