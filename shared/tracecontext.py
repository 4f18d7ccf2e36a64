"""W3C trace-context propagation over NATS headers and inside LiveKit dispatch metadata.

Small on purpose: the PyPI "NATS OTel" packages span every internal call and inject into acks
(see docs/ARCHITECTURE.md), so we propagate by hand with the global propagator.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.propagators.textmap import Getter, Setter


class _HeaderGetter(Getter[Mapping[str, str]]):
    """Case-insensitive: NATS headers pass through proxies and other clients that change case."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            lowered = key.lower()
            value = next((v for k, v in carrier.items() if k.lower() == lowered), None)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> Iterable[str]:  # type: ignore[override]
        return list(carrier.keys())


class _HeaderSetter(Setter[dict[str, str]]):
    def set(self, carrier: dict[str, str], key: str, value: str) -> None:
        carrier[key] = value


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()


def inject_headers(
    headers: dict[str, str] | None = None, ctx: otel_context.Context | None = None
) -> dict[str, str]:
    """Add ``traceparent``/``tracestate`` for ``ctx`` (default: current) to ``headers``; return it."""
    carrier = {} if headers is None else headers
    propagate.inject(carrier, context=ctx, setter=_SETTER)
    return carrier


def extract_headers(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The context carried by ``headers`` (an empty context when there is none)."""
    return propagate.extract(headers or {}, getter=_GETTER)


# ---------------------------------------------------------------------------------------------
# Dispatch metadata
#
# LiveKit passes CreateDispatch's ``metadata`` string to the job verbatim. We put our own object
# under RESERVED_KEY *next to* the user's metadata: when the user's metadata is a JSON object our
# key is inserted textually in front of its first key, so user code that parses the metadata keeps
# working and :func:`unwrap_dispatch_metadata` gives back the user's string byte for byte. Any
# other user metadata (plain text, an array) is carried verbatim under USER_METADATA_KEY.
# ---------------------------------------------------------------------------------------------

RESERVED_KEY = "_switchboard"
USER_METADATA_KEY = "_user_metadata"
_PREFIX = '{"' + RESERVED_KEY + '":'
_USER_FIELD = '"' + USER_METADATA_KEY + '":'


class MetadataProblem(ValueError):
    """The dispatch metadata had no usable Switchboard part; ``user_metadata`` is what it was."""

    def __init__(self, message: str, user_metadata: str) -> None:
        super().__init__(message)
        self.user_metadata = user_metadata


def wrap_dispatch_metadata(user_metadata: str | None, switchboard: Mapping[str, Any]) -> str:
    """The metadata string to send with CreateDispatch: ``switchboard`` next to the user's own."""
    ours = json.dumps(dict(switchboard), separators=(",", ":"), sort_keys=True)
    user = user_metadata or ""
    keys = _object_keys(user) if user.startswith("{") else None
    if keys is not None and RESERVED_KEY not in keys and USER_METADATA_KEY not in keys:
        inner = user[1:]
        separator = "" if inner.lstrip().startswith("}") else ","
        return f"{_PREFIX}{ours}{separator}{inner}"
    return f"{_PREFIX}{ours},{_USER_FIELD}{json.dumps(user)}}}"


def unwrap_dispatch_metadata(metadata: str) -> tuple[dict[str, Any], str]:
    """Split job metadata into (our part, the user's original metadata string).

    Raises :class:`MetadataProblem` (with ``.user_metadata`` set to the whole string) when the
    metadata is not ours — not JSON, no reserved key — so the agent can still run with it.
    """
    decoder = json.JSONDecoder()
    if metadata.startswith(_PREFIX):
        try:
            ours, end = decoder.raw_decode(metadata, len(_PREFIX))
            if not isinstance(ours, dict):
                raise ValueError
            rest = metadata[end:]
            if rest.startswith("," + _USER_FIELD):
                user, after = decoder.raw_decode(rest, len(_USER_FIELD) + 1)
                if isinstance(user, str) and rest[after:] == "}":
                    return ours, user
            elif rest.startswith(","):
                return ours, "{" + rest[1:]
            elif rest.lstrip().startswith("}"):
                return ours, "{" + rest
        except ValueError:  # JSONDecodeError is a ValueError
            pass
    raise MetadataProblem(_describe_foreign(metadata), user_metadata=metadata)


def _describe_foreign(metadata: str) -> str:
    if not metadata:
        return "dispatch metadata is empty: no Switchboard trace context or attempt"
    try:
        parsed = json.loads(metadata)
    except (json.JSONDecodeError, RecursionError):
        return "dispatch metadata is not JSON: no Switchboard trace context or attempt"
    if not isinstance(parsed, dict) or RESERVED_KEY not in parsed:
        return f"dispatch metadata has no '{RESERVED_KEY}' key: no Switchboard trace context or attempt"
    return f"dispatch metadata has a malformed '{RESERVED_KEY}' part"


def _object_keys(text: str) -> set[str] | None:
    try:
        parsed = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    return set(parsed) if isinstance(parsed, dict) else None


def inject_into(carrier: dict[str, Any], ctx: otel_context.Context | None = None) -> dict[str, Any]:
    """Put ``traceparent``/``tracestate`` of ``ctx`` (default: current) into a metadata dict."""
    fields: dict[str, str] = {}
    propagate.inject(fields, context=ctx, setter=_SETTER)
    carrier.update(fields)
    return carrier


def extract_from(carrier: Mapping[str, Any]) -> otel_context.Context:
    fields = {k: v for k, v in carrier.items() if isinstance(v, str)}
    return propagate.extract(fields, getter=_GETTER)
