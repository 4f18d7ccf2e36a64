"""Trace context through NATS headers and through LiveKit dispatch metadata."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace

from shared.tracecontext import (
    RESERVED_KEY,
    MetadataProblem,
    extract_from,
    extract_headers,
    inject_headers,
    inject_into,
    unwrap_dispatch_metadata,
    wrap_dispatch_metadata,
)

tracer = trace.get_tracer("test")


def test_headers_round_trip_the_trace_id() -> None:
    with tracer.start_as_current_span("producer") as span:
        headers = inject_headers({"Nats-Msg-Id": "RM_1"})
    assert headers["Nats-Msg-Id"] == "RM_1" and "traceparent" in headers
    ctx = extract_headers(headers)
    assert trace.get_current_span(ctx).get_span_context().trace_id == span.get_span_context().trace_id


def test_header_lookup_ignores_case() -> None:
    with tracer.start_as_current_span("producer") as span:
        headers = inject_headers()
    shouted = {"TraceParent": headers["traceparent"]}
    ctx = extract_headers(shouted)
    assert trace.get_current_span(ctx).get_span_context().span_id == span.get_span_context().span_id


def test_missing_headers_give_an_empty_context() -> None:
    assert not trace.get_current_span(extract_headers(None)).get_span_context().is_valid


@pytest.mark.parametrize(
    "user",
    [
        None,
        "",
        "{}",
        "{ }",
        '{"lang":"de", "nested":{"a":[1,2]}}',
        "plain text",
        "[1,2]",
        ' {"a":1}',
        '{"_switchboard":"theirs"}',
        '{"_user_metadata":"x"}',
        "{not json",
        "ünïcödé ✓",
    ],
)
def test_user_metadata_survives_byte_for_byte(user: str | None) -> None:
    wrapped = wrap_dispatch_metadata(user, {"attempt": 2, "pool": "eu-central-a"})
    parsed = json.loads(wrapped)
    assert parsed[RESERVED_KEY] == {"attempt": 2, "pool": "eu-central-a"}
    ours, back = unwrap_dispatch_metadata(wrapped)
    assert ours == {"attempt": 2, "pool": "eu-central-a"}
    assert back == (user or "")


def test_user_json_object_stays_parseable_by_user_code() -> None:
    wrapped = wrap_dispatch_metadata('{"lang":"de"}', {"attempt": 1})
    assert json.loads(wrapped)["lang"] == "de"


@given(st.text(max_size=200))
def test_any_user_metadata_round_trips(user: str) -> None:
    assert unwrap_dispatch_metadata(wrap_dispatch_metadata(user, {"a": 1}))[1] == user


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ("", "empty"),
        ("hello", "not JSON"),
        ('{"a":1}', "no '_switchboard'"),
        ('{"_switchboard":5}', "malformed"),
    ],
)
def test_foreign_metadata_is_a_problem_that_keeps_the_user_string(metadata: str, words: str) -> None:
    with pytest.raises(MetadataProblem, match=words) as info:
        unwrap_dispatch_metadata(metadata)
    assert info.value.user_metadata == metadata


def test_trace_context_through_dispatch_metadata() -> None:
    with tracer.start_as_current_span("CreateDispatch") as span:
        ours = inject_into({"attempt": 1})
    wrapped = wrap_dispatch_metadata('{"x":1}', ours)
    got, _ = unwrap_dispatch_metadata(wrapped)
    ctx = extract_from(got)
    assert trace.get_current_span(ctx).get_span_context().span_id == span.get_span_context().span_id
