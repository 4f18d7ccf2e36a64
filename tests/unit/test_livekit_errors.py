"""How LiveKit failures are classified (reason, permanent, ambiguous), and what the dispatcher does
with each class: ambiguous ones make every later try look for the dispatch first, permanent ones
end at once."""

from __future__ import annotations

import types

import aiohttp
import pytest
from livekit import api as lk

from orchestrator.livekit_gateway import LiveKitCallError, LiveRoom, classify
from orchestrator.room.facts import DispatchFailed, DispatchLanded, RoomGone
from tests.roomkit import run_dispatch

SECRET = "s3cr3t-api-secret-never-shown"


def twirp(status: int, code: str) -> lk.TwirpError:
    # LiveKit's free text may echo anything: it must not reach our messages.
    return lk.TwirpError(code, f"details {SECRET}", status=status)


def refused_connection() -> aiohttp.ClientConnectorError:
    key = types.SimpleNamespace(host="127.0.0.1", port=7880, ssl=False)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))  # type: ignore[arg-type]


CASES: list[tuple[str, BaseException, str, bool, bool]] = [
    # LiveKit failed or gave up midway: the request may have been applied.
    ("503 unavailable", twirp(503, "unavailable"), "unavailable", False, True),
    ("500 internal", twirp(500, "internal"), "unavailable", False, True),
    ("500 unknown", twirp(500, "unknown"), "unavailable", False, True),
    ("500 dataloss", twirp(500, "dataloss"), "unavailable", False, True),
    ("502 from a proxy", twirp(502, "unknown"), "unavailable", False, True),
    ("504 from a proxy", twirp(504, "unknown"), "unavailable", False, True),
    ("408 deadline_exceeded", twirp(408, "deadline_exceeded"), "timeout", False, True),
    ("408 from a proxy", twirp(408, "unknown"), "timeout", False, True),
    ("408 canceled", twirp(408, "canceled"), "canceled", False, True),
    ("409 aborted", twirp(409, "aborted"), "aborted", False, True),
    # Rate limited: refused before any work, so not ambiguous.
    ("429 resource_exhausted", twirp(429, "resource_exhausted"), "unavailable", False, False),
    ("429 from a proxy", twirp(429, "unknown"), "unavailable", False, False),
    # The thing asked about is not there.
    ("404 not_found", twirp(404, "not_found"), "not_found", True, False),
    # A 404 that is not LiveKit's not_found says nothing about the thing: a wrong URL.
    ("404 bad_route", twirp(404, "bad_route"), "invalid_argument", True, False),
    ("404 from a proxy", twirp(404, "unknown"), "invalid_argument", True, False),
    ("401 unauthenticated", twirp(401, "unauthenticated"), "unauthenticated", True, False),
    ("401 bad secret (LiveKit 1.13)", twirp(401, "unknown"), "unauthenticated", True, False),
    ("403 permission_denied", twirp(403, "permission_denied"), "unauthenticated", True, False),
    ("400 invalid_argument", twirp(400, "invalid_argument"), "invalid_argument", True, False),
    ("400 malformed", twirp(400, "malformed"), "invalid_argument", True, False),
    ("400 out_of_range", twirp(400, "out_of_range"), "invalid_argument", True, False),
    ("412 failed_precondition", twirp(412, "failed_precondition"), "invalid_argument", True, False),
    ("409 already_exists", twirp(409, "already_exists"), "invalid_argument", True, False),
    ("501 unimplemented", twirp(501, "unimplemented"), "invalid_argument", True, False),
    # Transport.
    ("connection refused", refused_connection(), "unreachable", False, False),
    ("server disconnected", aiohttp.ServerDisconnectedError(), "connection_lost", False, True),
    (
        "connection reset",
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        "connection_lost",
        False,
        True,
    ),
    ("reset (bare OSError)", ConnectionResetError(104, "reset"), "connection_lost", False, True),
    ("aiohttp read timeout", aiohttp.ServerTimeoutError("read"), "timeout", False, True),
    ("our asyncio.timeout (asyncio.TimeoutError is TimeoutError)", TimeoutError(), "timeout", False, True),
    ("anything else", RuntimeError("boom"), "unexpected", False, True),
]


@pytest.mark.parametrize(
    ("exc", "reason", "permanent", "ambiguous"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_classify(exc: BaseException, reason: str, permanent: bool, ambiguous: bool) -> None:
    err = classify(exc, "CreateDispatch")
    assert (err.reason, err.permanent, err.ambiguous) == (reason, permanent, ambiguous)
    assert str(err).startswith("CreateDispatch: ")
    assert SECRET not in str(err)
    if isinstance(exc, lk.TwirpError):
        assert err.status == exc.status


def test_messages() -> None:
    assert str(classify(twirp(503, "unavailable"), "CreateDispatch")) == (
        "CreateDispatch: LiveKit answered HTTP 503 unavailable"
    )
    assert "rate limit" in str(classify(twirp(429, "resource_exhausted"), "CreateDispatch"))
    assert "LIVEKIT_API_SECRET" in str(classify(twirp(401, "unauthenticated"), "ListRooms"))
    assert str(classify(twirp(404, "not_found"), "DeleteDispatch")) == (
        "DeleteDispatch: LiveKit does not know it: not_found (HTTP 404)"
    )


def test_a_classified_error_passes_through() -> None:
    err = LiveKitCallError("timeout", "x", permanent=False, ambiguous=True)
    assert classify(err, "CreateDispatch") is err


class FakeGateway:
    """CreateDispatch fails with the given errors, then succeeds; find_dispatch answers ``found``."""

    def __init__(
        self, *failures: BaseException, found: str | None = None, sids: tuple[str | None, ...] = ("RM_1",)
    ) -> None:
        self.failures = list(failures)
        self.found = found
        self.calls: list[str] = []
        # The sid LiveKit lists the room under at each ListRooms (the last one repeats); None: absent.
        self.sids = list(sids)
        self.listed: list[str | None] = []

    async def room_info(self, room: str) -> LiveRoom | None:
        sid = self.sids.pop(0) if len(self.sids) > 1 else self.sids[0]
        self.listed.append(sid)
        return LiveRoom(room, sid, None, "", 1) if sid is not None else None

    async def find_dispatch(self, room: str, agent_name: str, key: str) -> str | None:
        self.calls.append("find")
        return self.found

    async def create_dispatch(self, room: str, agent_name: str, metadata: str) -> str:
        self.calls.append("create")
        if self.failures:
            raise classify(self.failures.pop(0), "CreateDispatch")
        return "AD_new"


async def dispatch(gateway: FakeGateway) -> tuple[str, int, bool]:
    outcome = await run_dispatch(gateway)
    assert isinstance(outcome, DispatchLanded), outcome
    return outcome.dispatch_id, outcome.tries, outcome.found


async def test_after_a_5xx_every_try_looks_first() -> None:
    gateway = FakeGateway(twirp(503, "unavailable"), twirp(500, "internal"))
    assert await dispatch(gateway) == ("AD_new", 3, False)
    assert gateway.calls == ["create", "find", "create", "find", "create"]


async def test_a_5xx_that_landed_is_found_not_dispatched_again() -> None:
    gateway = FakeGateway(twirp(503, "unavailable"), found="AD_landed")
    assert await dispatch(gateway) == ("AD_landed", 2, True)
    assert gateway.calls == ["create", "find"]


async def test_rate_limited_is_retried_without_looking() -> None:
    gateway = FakeGateway(twirp(429, "resource_exhausted"))
    assert await dispatch(gateway) == ("AD_new", 2, False)
    assert gateway.calls == ["create", "create"]


async def test_a_room_livekit_does_not_have_is_never_created_by_a_dispatch() -> None:
    gateway = FakeGateway(sids=(None,))
    outcome = await run_dispatch(gateway)
    assert isinstance(outcome, RoomGone) and outcome.sid is None
    assert gateway.calls == []  # CreateDispatch would have created the room


async def test_a_landed_dispatch_costs_one_look_at_the_room_before_the_call_and_none_after() -> None:
    # A room deleted (and made again by the call) while it was on its way is known later, by the
    # dispatch in it (Effects.ghost_of, the removal, the worker): not by a second ListRooms per room.
    gateway = FakeGateway(sids=("RM_1", "RM_2"))
    outcome = await run_dispatch(gateway)
    assert isinstance(outcome, DispatchLanded) and outcome.room_sid == "RM_1"
    assert gateway.listed == ["RM_1"]


@pytest.mark.parametrize(
    "exc", [twirp(404, "not_found"), twirp(400, "invalid_argument"), twirp(401, "unknown")]
)
async def test_permanent_failures_are_not_retried(exc: lk.TwirpError) -> None:
    gateway = FakeGateway(exc)
    outcome = await run_dispatch(gateway)
    assert isinstance(outcome, DispatchFailed) and outcome.permanent
    assert gateway.calls == ["create"]
