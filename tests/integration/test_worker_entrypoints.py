"""Any agent plugged in gets the same reports; bad dispatch metadata never stops an agent joining;
an agent declared the livekit-agents way (AgentServer, prewarm, on_request) runs in a pool unchanged."""

from __future__ import annotations

import hashlib
import json
import wave
from pathlib import Path

import numpy as np
from livekit import api as lkapi
from nats.aio.client import Client as NATS

from devstack.livekit_server import LiveKitServer
from shared.dispatch_metadata import MAX_METADATA_BYTES
from tests.agents import prewarmed_agent
from tests.workerkit import (
    Listener,
    WorkerFactory,
    agent_attribute,
    agents_in_room,
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


PREWARMED = ["--entrypoint", "tests.agents.prewarmed_agent:server"]


def _write_chime(path: Path) -> np.ndarray:
    """A 0.4 s decaying 660 Hz chime with a pinch of seeded noise, as 48 kHz mono 16-bit PCM."""
    rate = prewarmed_agent.RATE
    t = np.arange(int(0.4 * rate)) / rate
    noise = np.random.default_rng(20).normal(0.0, 0.01, t.size)
    samples = (32767 * (0.3 * np.sin(2 * np.pi * 660 * t) * np.exp(-2 * t) + noise)).astype(np.int16)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return samples


async def test_livekit_agents_server_with_prewarm_runs_unchanged_under_the_pool(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    livekit_api: lkapi.LiveKitAPI,
    livekit_server: LiveKitServer,
    tmp_path: Path,
) -> None:
    chime = _write_chime(tmp_path / "chime.wav")
    worker = workers.start(
        "pool-prewarmed",
        extra_args=PREWARMED,
        extra_env={prewarmed_agent.CHIME_ENV: str(tmp_path / "chime.wav")},
        capacity=2,
    )
    rooms = ["room-prewarmed-1", "room-prewarmed-2"]
    user_metadata = json.dumps({"persona": "chime"})
    async with statuses(nc) as inbox:
        # Dispatched under the pool's agent_name, not the "chime-agent" the declaration names.
        ids = [await dispatch(livekit_api, worker, room, user_metadata=user_metadata) for room in rooms]
        for dispatch_id in ids:
            await inbox.wait_for(is_state(dispatch_id, "joined"), 30, "joined")
        async with Listener(livekit_server, rooms[0]) as listener:
            await listener.wait_audible(20)  # the prewarmed chime, played by the entrypoint
            await inbox.wait_for(is_state(ids[0], "voice"), 20, "voice")

    seen = []
    for room in rooms:
        await agent_attribute(livekit_server, room, "chime.sha256")  # the entrypoint has run
        (agent,) = await agents_in_room(livekit_api, room)
        seen.append(dict(agent.attributes))
        # The user's on_request named the participant and passed the user's metadata on; the
        # identity and the switchboard.* attributes stay Switchboard's.
        assert agent.name == "Chime" and agent.metadata == user_metadata
        assert agent.identity.startswith("agent-AJ_"), agent.identity  # not "chime-agent"
        assert agent.attributes["chime.greeting"] == "ding"
        assert agent.attributes["switchboard.pool"] == worker.pool
        assert agent.attributes["lk.agent.name"] == worker.agent_name
    # Each entrypoint played exactly what the prewarm loaded from the file...
    assert [a["chime.sha256"] for a in seen] == [hashlib.sha256(chime.tobytes()).hexdigest()] * 2
    # ...loaded once for the worker process and shared by both job threads.
    assert [a["chime.prewarm_runs"] for a in seen] == ["1", "1"]
    assert seen[0]["chime.object"] == seen[1]["chime.object"]
    log = worker.log_tail(400)
    assert "agent_name='chime-agent' (the pool registers as 'test-agent.pool-prewarmed')" in log
    assert "load_threshold=0.5, num_idle_processes=3" in log and "port=8081" in log
    for room in rooms:  # end the jobs now rather than in the worker's drain grace
        await livekit_api.room.delete_room(lkapi.DeleteRoomRequest(room=room))


async def test_a_prewarm_that_fails_stops_the_worker_at_start(
    workers: WorkerFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    # The process executor's path: the prewarm is checked in a fresh process before registering.
    # (The thread executor runs it in the worker itself: tests/unit/test_worker_entrypoints.py.)
    worker = workers.start(
        "pool-badprewarm",
        wait=False,
        extra_args=[*PREWARMED, "--executor", "process"],
        extra_env={prewarmed_agent.CHIME_ENV: str(tmp_path / "missing.wav")},
    )
    assert await worker.wait_exit(60) == 2, worker.log_tail()
    log = worker.log_tail()
    assert "switchboard worker: prewarm setup_fnc of tests.agents.prewarmed_agent:server failed" in log
    assert "FileNotFoundError" in log and "missing.wav" in log
