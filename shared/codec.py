"""The one encode/decode path for wire messages.

Decoding never lets an exception other than :class:`ContractError` escape, whatever the bytes
(a property test holds us to that), and the error's message says what is wrong: which field,
what was expected, what was got — never a pydantic traceback, never the raw user metadata.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import ValidationError

from shared.messages import Message

MAX_MESSAGE_BYTES = 64 * 1024

M = TypeVar("M", bound=Message)


class ContractError(ValueError):
    """A message broke the wire contract. ``reason`` is a short machine-friendly category."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def encode(message: Message) -> bytes:
    data = message.model_dump_json(exclude_none=True).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise ContractError(
            "oversized",
            f"{type(message).__name__} is {len(data)} bytes encoded; the limit is {MAX_MESSAGE_BYTES}",
        )
    return data


def decode(model: type[M], data: bytes | bytearray | memoryview) -> M:
    """Validate ``data`` as ``model``; raise :class:`ContractError` naming the problem."""
    name = model.__name__
    raw = bytes(data)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ContractError(
            "oversized", f"{name}: payload is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(
            "not_utf8", f"{name}: payload is not UTF-8 (bad byte at offset {exc.start})"
        ) from None
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ContractError("not_json", f"{name}: payload is not JSON{where}") from None
    if not isinstance(obj, dict):
        raise ContractError("not_object", f"{name}: payload must be a JSON object, got {_json_type(obj)}")
    version = obj.get("v")
    if "v" not in obj:
        raise ContractError("missing_version", f"{name}: field 'v' (schema version) is missing")
    if type(version) is not int or version not in model.SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(model.SUPPORTED_VERSIONS))
        raise ContractError(
            "unknown_version",
            f"{name}: schema version v={_short(version)} is not supported; this build reads v={supported}",
        )
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise ContractError("invalid", f"{name}: {describe_validation_error(exc)}") from None
    except (ValueError, RecursionError):  # pydantic-core refuses e.g. too-deep nesting
        raise ContractError("invalid", f"{name}: payload could not be parsed") from None


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        kind = err["type"]
        if kind == "missing":
            parts.append(f"field '{loc}' is missing")
        elif kind == "extra_forbidden":
            parts.append(f"field '{loc}' is not allowed (unknown field)")
        else:
            hide = _is_user_data(err["loc"]) or kind == "value_error"
            got = "" if hide else f" (got {_describe_input(err.get('input'))})"
            parts.append(f"field '{loc}': {err['msg']}{got}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _is_user_data(loc: tuple[int | str, ...]) -> bool:
    # Raw user metadata must not end up in logs or dead-letter reasons.
    return bool(loc) and loc[0] == "metadata"


def _describe_input(value: Any) -> str:
    return (
        f"{_json_type(value)} {_short(value)}"
        if isinstance(value, str | int | float | bool)
        else _json_type(value)
    )


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number" if isinstance(value, float) else "integer"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
