"""Signed LiveKit tokens are reused per set of grants, for a while, in a bounded map."""

from __future__ import annotations

import jwt
from livekit import api as lk

from orchestrator.livekit_tokens import REUSE_S, TokenCache

SECRET = "a-secret-long-enough-for-hs256-signing"


def _claims(header: dict[str, str]) -> dict[str, object]:
    token = header["authorization"].removeprefix("Bearer ")
    claims: dict[str, object] = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_nbf": False})
    return claims


def _room(header: dict[str, str]) -> tuple[object, object, object]:
    video = _claims(header)["video"]
    assert isinstance(video, dict)
    return video.get("roomAdmin"), video.get("roomList"), video.get("room")


def test_a_token_carries_the_grants_asked_and_is_reused_until_its_reuse_time() -> None:
    now = [1000.0]
    cache = TokenCache("key", SECRET, clock=lambda: now[0])
    admin = cache.header(lk.VideoGrants(room_admin=True, room="r1"))
    claims = _claims(admin)
    assert claims["iss"] == "key"
    assert _room(admin) == (True, None, "r1")
    assert cache.header(lk.VideoGrants(room_admin=True, room="r1")) == admin
    other = cache.header(lk.VideoGrants(room_admin=True, room="r2"))
    assert _room(other) == (True, None, "r2")
    assert cache.header(lk.VideoGrants(room_list=True)) not in (admin, other)
    now[0] += REUSE_S
    fresh = cache.header(lk.VideoGrants(room_admin=True, room="r1"))
    assert _room(fresh) == (True, None, "r1")
    assert len(cache) == 3


def test_a_token_outlives_its_reuse_time() -> None:
    cache = TokenCache("key", SECRET)
    claims = _claims(cache.header(lk.VideoGrants(room_list=True)))
    assert int(str(claims["exp"])) - int(str(claims["nbf"])) > REUSE_S + 60


def test_the_map_is_bounded_and_drops_its_oldest_token() -> None:
    cache = TokenCache("key", SECRET, max_tokens=3)
    first = cache.header(lk.VideoGrants(room_admin=True, room="r0"))
    for i in range(1, 4):
        cache.header(lk.VideoGrants(room_admin=True, room=f"r{i}"))
    assert len(cache) == 3
    # r0 was dropped: asking again signs a new token (same grants, maybe another second).
    again = cache.header(lk.VideoGrants(room_admin=True, room="r0"))
    assert _room(again) == _room(first) == (True, None, "r0")
    assert len(cache) == 3
