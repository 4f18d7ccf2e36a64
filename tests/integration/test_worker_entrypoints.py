"""Any agent plugged in gets the same reports; bad dispatch metadata never stops an agent joining."""

from __future__ import annotations

import hashlib
import json

from livekit import api as lkapi
from nats.aio.client import Client as NATS

from orchestrator.devstack.livekit_server import LiveKitServer
from shared.dispatch_metadata import MAX_METADATA_BYTES
from tests.workerkit import (
    Listener,
    WorkerFactory,
    agent_attribute,
    dispatch,
    is_state,
    statuses,
    workers,  # noqa: F401  (fixture)
)

CUSTOM = ["--entrypoint", "tests.agents.custom_agent:entrypoint"]


async def _seen_metadata(livekit: LiveKitServer, room: str) -> tuple[str, int]:
    digest = await agent_attribute(livekit, room, "custom.metadata_sha256")
    return digest, int(await agent_attribute(livekit, room, "custom.metadata_length"))


def _fingerprint(text: str) -> tuple[str, int]:
    return hashlib.sha256(text.encode()).hexdigest(), len(text)


async def test_user_entrypoint_gets_joined_and_voice_and_its_own_metadata(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    livekit_api: lkapi.LiveKitAPI,
    livekit_server: LiveKitServer,
) -> None:
    worker = workers.start("pool-custom", extra_args=CUSTOM)
    room = "room-custom"
    user_metadata = json.dumps({"lang": "de", "persona": "calm"})
    async with statuses(nc) as inbox:
        dispatch_id = await dispatch(livekit_api, worker, room, attempt=2, user_metadata=user_metadata)
        joined = await inbox.wait_for(is_state(dispatch_id, "joined"), 30, "joined")
        assert joined.attempt == 2 and joined.warnings == []
        async with Listener(livekit_server, room) as listener:
            await listener.wait_audible(20)
            await inbox.wait_for(is_state(dispatch_id, "voice"), 20, "voice")
        # The agent saw the user's metadata byte for byte, without our reserved part.
        assert await _seen_metadata(livekit_server, room) == _fingerprint(user_metadata)


async def test_bad_dispatch_metadata_still_joins_and_says_why(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    livekit_api: lkapi.LiveKitAPI,
    livekit_server: LiveKitServer,
) -> None:
    worker = workers.start("pool-badmeta", extra_args=CUSTOM, capacity=3)
    cases = {
        "room-meta-not-json": ("plain text, not JSON {", "not JSON"),
        "room-meta-no-key": (json.dumps({"lang": "fr"}), "has no '_switchboard' key"),
        "room-meta-too-large": (json.dumps({"blob": "x" * (MAX_METADATA_BYTES + 10)}), "over the"),
    }
    async with statuses(nc) as inbox:
        for room, (metadata, problem) in cases.items():
            dispatch_id = await dispatch(livekit_api, worker, room, raw_metadata=metadata)
            joined = await inbox.wait_for(is_state(dispatch_id, "joined"), 30, f"joined in {room}")
            # No attempt could be read: 0 says "unknown", and the warning says why.
            assert joined.attempt == 0
            assert len(joined.warnings) == 1 and problem in joined.warnings[0], joined.warnings
            assert metadata not in joined.warnings[0]  # user data stays out of reports
            assert await _seen_metadata(livekit_server, room) == _fingerprint(metadata)
    status, health = worker.health()
    assert status == 200 and health["active"] == 3
