"""`switchboard doctor` against a real stack: green when healthy; each misconfiguration named.

The cases share one healthy stack (real nats-server + livekit-server, an in-process orchestrator,
a pool heartbeating over NATS) and vary only what the doctor is pointed at.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from pydantic import SecretStr

from devstack.livekit_server import LiveKitServer
from devstack.nats_server import NatsServer
from devstack.ports import free_tcp_port
from orchestrator.ops.doctor_checks import exit_code, run_checks
from orchestrator.ops.doctor_facts import gather_facts
from shared.config import SwitchboardConfig, parse_config
from shared.settings import Settings
from tests.orchestratorkit import AGENT, FakePool, make_config, make_settings, running_orchestrator

pytestmark = pytest.mark.integration
SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")


def with_rules(config: SwitchboardConfig, *rules: dict[str, object]) -> SwitchboardConfig:
    data = config.model_dump(mode="json")
    data["rules"] = list(rules)
    return parse_config(data)


async def doctor(
    settings: Settings, config: SwitchboardConfig, env: dict[str, str]
) -> tuple[list[str], int, str]:
    results = run_checks(await gather_facts(settings, config, env))
    text = "\n".join(f"{r.name}: {r.detail} | {r.fix}" for r in results if r.ok is False)
    return [r.name for r in results if r.ok is False], exit_code(results), text


async def run_cli(args: list[str], env: dict[str, str], within: float = 60) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NATS_", "LIVEKIT_"))}
    proc = await asyncio.create_subprocess_exec(
        SWITCHBOARD,
        *args,
        env={**clean, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_doctor_finds_each_misconfiguration(
    nc: NATS, nats_server: NatsServer, livekit_server: LiveKitServer, tmp_path: Path
) -> None:
    config = make_config()
    settings = make_settings(nats_server, livekit_server)
    pool = FakePool(nc, "eu-central-a", "eu-central")
    await pool.start()
    closed_port = free_tcp_port()  # nothing listens here
    try:
        async with running_orchestrator(settings, config):
            assert await doctor(settings, config, {}) == ([], 0, "")

            down = settings.model_copy(
                update={"nats": settings.nats.model_copy(update={"url": f"nats://127.0.0.1:{closed_port}"})}
            )
            wrong = settings.model_copy(
                update={"livekit": settings.livekit.model_copy(update={"api_secret": SecretStr("x" * 40)})}
            )
            no_pool = with_rules(
                config,
                {"name": "ornina", "match": "ornina-*", "agent": AGENT},
                {"name": "support", "match": "support-*", "agent": "support-agent"},
            )
            no_rule = with_rules(config, {"name": "support", "match": "support-*", "agent": "support-agent"})
            otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port}"}
            cases = [
                (down, config, {}, ["NATS reachable"], "nats-server"),
                (wrong, config, {}, ["LiveKit credentials"], "LIVEKIT_API_SECRET"),
                (settings, no_pool, {}, ["rule support has a live pool"], "support-agent"),
                (
                    settings,
                    no_rule,
                    {},
                    ["rule support has a live pool", "pool eu-central-a is targeted by a rule"],
                    "never get a room",
                ),
                (settings, config, otlp, ["OTLP endpoint"], f"127.0.0.1:{closed_port}"),
            ]
            for case_settings, case_config, env, failed, words in cases:
                names, code, text = await doctor(case_settings, case_config, env)
                assert (names, code) == (failed, 1), text
                assert words in text
                assert livekit_server.api_secret not in text and "x" * 40 not in text

            # The command itself: exit codes and one line per check.
            conf_path = tmp_path / "switchboard.yaml"
            conf_path.write_text(json.dumps(config.model_dump(mode="json")))
            env = {
                "NATS_URL": nats_server.url,
                "LIVEKIT_URL": livekit_server.http_url,
                "LIVEKIT_API_KEY": livekit_server.api_key,
                "LIVEKIT_API_SECRET": livekit_server.api_secret,
                "SWITCHBOARD_CONFIG": str(conf_path),
            }
            code, out = await run_cli(["doctor"], env)
            assert code == 0, out
            assert "✘" not in out and "✔ pools heartbeating" in out and "all checks passed" in out
            code, out = await run_cli(["doctor"], {**env, "NATS_URL": f"nats://127.0.0.1:{closed_port}"})
            assert code == 1 and "✘ NATS reachable" in out and "fix:" in out, out
    finally:
        await pool.stop()
