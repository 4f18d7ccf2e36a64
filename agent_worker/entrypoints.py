"""Find the agent entrypoint to run: the user's ``package.module:function`` or the default agent."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, cast

from livekit.agents import JobContext

Entrypoint = Callable[[JobContext], Awaitable[None]]
DEFAULT_ENTRYPOINT = "agent_worker.default_agent:entrypoint"


class EntrypointError(ValueError):
    """The ``--entrypoint`` reference cannot be loaded; the message says why."""


def load_entrypoint(reference: str | None) -> Entrypoint:
    ref = reference or DEFAULT_ENTRYPOINT
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise EntrypointError(f"entrypoint {ref!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EntrypointError(f"entrypoint {ref!r}: cannot import {module_name!r} ({exc})") from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise EntrypointError(f"entrypoint {ref!r}: {module_name!r} has no attribute {attr!r}")
    if not (inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__)):
        raise EntrypointError(f"entrypoint {ref!r} must be an async function taking a JobContext")
    return cast(Entrypoint, target)
