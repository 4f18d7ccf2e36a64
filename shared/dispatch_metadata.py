"""Dispatch metadata as both sides see it: our :class:`DispatchInfo` next to the user's own string."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from opentelemetry import context as otel_context

from shared.codec import ContractError, decode
from shared.messages import DispatchInfo
from shared.tracecontext import (
    MetadataProblem,
    extract_from,
    inject_into,
    unwrap_dispatch_metadata,
    wrap_dispatch_metadata,
)


def attempt_key(room: str, attempt: int, sid: str | None = None) -> str:
    """The attempt's key in its dispatch's metadata. With the room's sid in it, a newer room of the
    name never takes an older room's dispatch (a late one, sitting in the room it created) for its
    own attempt."""
    return f"{room}/{sid}/{attempt}" if sid else f"{room}/{attempt}"


def build_dispatch_metadata(user_metadata: str | None, info: DispatchInfo) -> str:
    """The CreateDispatch metadata: ``info`` plus the current trace context, next to the user's string."""
    ours = inject_into(info.model_dump(exclude_none=True, exclude={"traceparent", "tracestate"}))
    return wrap_dispatch_metadata(user_metadata, ours)


@dataclass
class ReadMetadata:
    """What a worker makes of a job's metadata. ``info`` is None when it was not ours or broken;
    ``problems`` says why (reported in the agent's status, the job still runs)."""

    user_metadata: str
    info: DispatchInfo | None = None
    problems: list[str] = field(default_factory=list)

    def trace_context(self) -> otel_context.Context | None:
        if self.info is None or not self.info.traceparent:
            return None
        return extract_from(self.info.model_dump(include={"traceparent", "tracestate"}, exclude_none=True))


MAX_METADATA_BYTES = 64 * 1024


def read_dispatch_metadata(metadata: str) -> ReadMetadata:
    if len(metadata.encode()) > MAX_METADATA_BYTES:
        return ReadMetadata(
            metadata,
            problems=[
                f"dispatch metadata is {len(metadata.encode())} bytes, over the "
                f"{MAX_METADATA_BYTES}-byte limit: not parsed"
            ],
        )
    try:
        ours, user = unwrap_dispatch_metadata(metadata)
    except MetadataProblem as problem:
        return ReadMetadata(problem.user_metadata, problems=[str(problem)])
    try:
        info = decode(DispatchInfo, json.dumps(ours).encode())
    except ContractError as exc:
        return ReadMetadata(user, problems=[f"dispatch metadata: {exc}"])
    return ReadMetadata(user, info=info)
