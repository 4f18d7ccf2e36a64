"""The wire contract: every model round-trips; every kind of bad input gets a typed, clear error."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.codec import MAX_MESSAGE_BYTES, ContractError, decode, encode
from shared.messages import AgentStatus, Message, PoolHeartbeat, RoomCreated, RoomEnded

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

SAMPLES: list[Message] = [
    RoomCreated(
        room="ornina-1",
        sid="RM_abc",
        region="eu-central",
        metadata={"lang": "de", "n": [1, 2]},
        created_at=NOW,
    ),
    RoomCreated(room="bare"),
    RoomEnded(room="ornina-1", sid="RM_abc"),
    PoolHeartbeat(
        pool="eu-central-a",
        agent="ornina-avatar-agent",
        region="eu-central",
        agent_name="ornina-avatar-agent.eu-central-a",
        worker="w-1",
        capacity=4,
        active=1,
        load=0.25,
        draining=False,
        version="0.1.0",
        seq=7,
        at=NOW,
    ),
    AgentStatus(
        room="ornina-1",
        dispatch_id="AD_1",
        attempt=1,
        pool="eu-central-a",
        worker="w-1",
        state="voice",
        at=NOW,
        identity="agent-AJ_1",
        warnings=["dispatch metadata is not JSON"],
    ),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_model_round_trips(message: Message) -> None:
    assert decode(type(message), encode(message)) == message


def test_public_room_created_shape_is_exactly_the_documented_one() -> None:
    wire = {
        "v": 1,
        "room": "ornina-42",
        "sid": "RM_x",
        "region": "us-east",
        "metadata": {"a": {"b": None}},
        "created_at": "2026-11-25T12:00:00Z",
    }
    event = decode(RoomCreated, json.dumps(wire).encode())
    assert event.room == "ornina-42" and event.region == "us-east" and event.metadata == {"a": {"b": None}}
    assert event.dedupe_id() == "RM_x"
    assert decode(RoomCreated, b'{"v":1,"room":"r"}').dedupe_id() == "r"
    assert decode(RoomEnded, b'{"v":1,"room":"r","sid":"RM_1"}').sid == "RM_1"


def _err(model: type[Message], data: bytes) -> ContractError:
    with pytest.raises(ContractError) as info:
        decode(model, data)
    return info.value


@pytest.mark.parametrize(
    ("data", "reason", "words"),
    [
        (b'{"v":1}', "invalid", ["'room'", "missing"]),
        (b'{"v":1,"room":5}', "invalid", ["'room'", "valid string", "integer 5"]),
        (b'{"v":1,"room":"r","created_at":"yesterday"}', "invalid", ["'created_at'", "string"]),
        (b'{"v":1,"room":"r","created_at":"2026-11-25T12:00:00"}', "invalid", ["'created_at'", "timezone"]),
        (b'{"v":1,"room":"r","priority":3}', "invalid", ["'priority'", "unknown field"]),
        (b'{"v":2,"room":"r"}', "unknown_version", ["v=2", "v=1"]),
        (b'{"v":"1","room":"r"}', "unknown_version", ["v='1'"]),
        (b'{"room":"r"}', "missing_version", ["'v'"]),
        (b"not json", "not_json", ["not JSON"]),
        (b"\xff\xfe{}", "not_utf8", ["not UTF-8"]),
        (b"[1,2]", "not_object", ["JSON object", "array"]),
        (b'{"v":1,"room":"r","metadata":[1]}', "invalid", ["'metadata'"]),
        (b'{"v":1,"room":"' + b"x" * 300 + b'"}', "invalid", ["'room'", "256"]),
    ],
)
def test_bad_room_created_gets_a_typed_error_naming_the_problem(
    data: bytes, reason: str, words: list[str]
) -> None:
    err = _err(RoomCreated, data)
    assert err.reason == reason
    for word in words:
        assert word in str(err), str(err)
    assert "Traceback" not in str(err) and "pydantic" not in str(err).lower()


def test_oversized_payload_is_rejected_before_parsing() -> None:
    big = b'{"v":1,"room":"r","metadata":{"x":"' + b"a" * MAX_MESSAGE_BYTES + b'"}}'
    err = _err(RoomCreated, big)
    assert err.reason == "oversized" and str(MAX_MESSAGE_BYTES) in str(err)


def test_oversized_message_cannot_be_encoded() -> None:
    with pytest.raises(ContractError, match="limit"):
        encode(RoomCreated(room="r", metadata={"x": "a" * MAX_MESSAGE_BYTES}))


def test_user_metadata_values_never_appear_in_errors() -> None:
    err = _err(RoomCreated, b'{"v":1,"room":"r","metadata":"secret-user-text"}')
    assert "secret-user-text" not in str(err)


def test_heartbeat_strict_types() -> None:
    hb = json.loads(encode(SAMPLES[3]))
    hb["capacity"] = "4"
    err = _err(PoolHeartbeat, json.dumps(hb).encode())
    assert "'capacity'" in str(err) and "valid integer" in str(err)
    hb["capacity"] = 4
    hb["load"] = 1.5
    assert "'load'" in str(_err(PoolHeartbeat, json.dumps(hb).encode()))


def test_agent_status_state_is_an_enum() -> None:
    st_ = json.loads(encode(SAMPLES[4]))
    st_["state"] = "speaking"
    err = _err(AgentStatus, json.dumps(st_).encode())
    assert "'state'" in str(err) and "joined" in str(err)


_MODELS: list[type[Message]] = [RoomCreated, RoomEnded, PoolHeartbeat, AgentStatus]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512), model=st.sampled_from(_MODELS))
def test_arbitrary_bytes_only_ever_raise_contract_error(data: bytes, model: type[Message]) -> None:
    with contextlib.suppress(ContractError):
        decode(model, data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    obj=st.dictionaries(
        st.sampled_from(["v", "room", "sid", "region", "metadata", "created_at", "x"]), _json
    ),
    model=st.sampled_from(_MODELS),
)
def test_arbitrary_json_objects_only_ever_raise_contract_error(
    obj: dict[str, Any], model: type[Message]
) -> None:
    try:
        decode(model, json.dumps(obj).encode())
    except ContractError as exc:
        assert str(exc).startswith(model.__name__)
