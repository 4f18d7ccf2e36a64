"""switchboard.yaml validation: clear errors that say where the problem is."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConfigError, load_config, parse_config
from shared.subjects import pool_agent_name, pool_heartbeat

GOOD = """
default_region: eu-central
regions:
  eu-central: {neighbours: [us-east]}
  us-east: {neighbours: [eu-central]}
rules:
  - {name: ornina, match: "ornina-*", agent: ornina-avatar-agent, priority: 10}
pools:
  - {id: eu-central-a, agent: ornina-avatar-agent, region: eu-central}
orchestrator: {join_deadline_s: 5}
"""


def test_good_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.yaml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.rules[0].agent == "ornina-avatar-agent"
    assert cfg.regions["eu-central"].neighbours == ["us-east"]
    assert cfg.orchestrator.join_deadline_s == 5


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"rulez": []}, "'rulez' is not allowed"),
        ({"rules": [{"name": "a", "match": "x[", "agent": "b"}]}, "unbalanced"),
        ({"rules": [{"name": "a", "agent": "b"}]}, "'rules.0.match' is missing"),
        ({"regions": {"eu": {"neighbours": ["mars"]}}}, "'mars'"),
        (
            {"rules": [{"name": "a", "match": "*", "agent": "b"}, {"name": "a", "match": "x", "agent": "c"}]},
            "repeated: a",
        ),
        ({"orchestrator": {"join_deadline_s": -1}}, "join_deadline_s"),
        ({"orchestrator": {"terminal_record_ttl_s": 0.5}}, "at least 1 second"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_config_names_the_problem(data: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config(data, "switchboard.yaml")


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_agent_name_convention() -> None:
    assert pool_agent_name("ornina-avatar-agent", "eu-central-a") == "ornina-avatar-agent.eu-central-a"
    assert pool_heartbeat("eu-central-a") == "switchboard.pools.eu-central-a.heartbeat"
    with pytest.raises(ValueError, match="pool id"):
        pool_heartbeat("a.b")
    with pytest.raises(ValueError, match="agent name"):
        pool_agent_name("has space", "p")
