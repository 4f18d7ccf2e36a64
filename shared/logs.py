"""Logging setup shared by every process: text or JSON lines, context fields, trace ids, redaction.

Every line carries the room / pool / attempt / dispatch id bound with :func:`log_context` and the
current trace and span ids. Known secret values are masked in every record as a last line of
defence (secrets are ``SecretStr`` everywhere, so they should never reach a log in the first place).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from opentelemetry import trace

# Immutable default: log_context() always sets a fresh mapping, never mutates the current one.
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "switchboard_log_context", default=_EMPTY
)
CONTEXT_FIELDS = ("room", "pool", "attempt", "dispatch_id", "worker")
REDACTED = "[REDACTED]"


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind fields (room=, pool=, attempt=, dispatch_id=, ...) to every log line in this block."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class _ContextFilter(logging.Filter):
    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        if self._secrets:
            message = record.getMessage()
            masked = message
            for secret in self._secrets:
                masked = masked.replace(secret, REDACTED)
            if masked is not message and masked != message:
                record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    _FIELDS = (*CONTEXT_FIELDS, "trace_id", "span_id", "event", "state", "reason")

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in self._FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = " ".join(
            f"{k}={getattr(record, k)}"
            for k in (*CONTEXT_FIELDS, "trace_id")
            if getattr(record, k, None) is not None
        )
        return f"{base} {extras}" if extras else base


def configure_logging(level: str = "INFO", fmt: str = "text", secrets: Sequence[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter(secrets))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Throttled:
    """A warning per key at most once per ``every_s``: a flood of bad input (a forging or
    misconfigured client) must not flood the log. The first line of each key always comes."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0, max_keys: int = 1024) -> None:
        self._log, self._every_s, self._max_keys = logger, every_s, max_keys
        self._last: dict[object, float] = {}

    def warn(self, key: object, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._every_s:
            return
        if len(self._last) >= self._max_keys:
            self._last.clear()  # bounded: at worst some keys log again early
        self._last[key] = now
        self._log.warning(msg, *args)
