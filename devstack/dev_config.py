"""The switchboard.yaml `switchboard dev` generates: two regions, one demo rule, two pinned pools."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEMO_AGENT = "ornina-avatar-agent"
DEMO_RULE_GLOB = "ornina-*"


@dataclass(frozen=True, slots=True)
class DevPool:
    pool: str
    region: str


DEV_POOLS = (DevPool("eu-central-a", "eu-central"), DevPool("us-east-a", "us-east"))


def demo_rooms(count: int) -> list[tuple[str, str]]:
    """(room, region) pairs: names match the demo rule; regions alternate between the pools."""
    return [(f"ornina-demo-{i + 1}", DEV_POOLS[i % len(DEV_POOLS)].region) for i in range(count)]


def dev_config(ingest_port: int, capacity: int, trace_ui_url: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "default_region": "eu-central",
        "regions": {"eu-central": {"neighbours": ["us-east"]}, "us-east": {"neighbours": ["eu-central"]}},
        "rules": [{"name": "ornina-demo", "match": DEMO_RULE_GLOB, "agent": DEMO_AGENT, "priority": 10}],
        "pools": [{"id": p.pool, "agent": DEMO_AGENT, "region": p.region} for p in DEV_POOLS],
        "orchestrator": {"join_deadline_s": 30, "voice_deadline_s": 30},
        # Short grace: Ctrl-C should not wait long for demo jobs; remote kill lets the drill's
        # non-dev path (PoolCommand exit) be tried against dev too.
        "worker": {"capacity": capacity, "drain_grace_s": 2, "allow_remote_kill": True},
        "ingest": {"host": "127.0.0.1", "port": ingest_port},
    }
    if trace_ui_url:
        config["trace_ui_url"] = trace_ui_url
    return config
