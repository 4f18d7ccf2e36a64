"""Worker options: command line over environment over switchboard.yaml, every setting explicit."""

from __future__ import annotations

import pytest

from agent_worker.loop_monitor import LIVEKIT_ENV, configure_loop_monitor
from agent_worker.options import OptionsError, resolve_options
from shared.config import parse_config

CONFIG = parse_config(
    {
        "regions": {"eu-central": {}},
        "pools": [{"id": "eu-central-a", "agent": "ornina-avatar-agent", "region": "eu-central"}],
        "worker": {"capacity": 6, "drain_grace_s": 12, "allow_remote_kill": True},
    }
)


def test_a_pinned_pool_supplies_agent_region_and_worker_defaults() -> None:
    opts = resolve_options(CONFIG, agent=None, region=None, pool="eu-central-a", capacity=None)
    assert (opts.agent, opts.region, opts.capacity) == ("ornina-avatar-agent", "eu-central", 6)
    assert opts.agent_name == "ornina-avatar-agent.eu-central-a"
    assert (opts.drain_grace_s, opts.allow_remote_kill) == (12, True)


def test_command_line_wins_over_the_file() -> None:
    opts = resolve_options(
        CONFIG, agent=None, region=None, pool="eu-central-a", capacity=2, drain_grace_s=3.0
    )
    assert (opts.capacity, opts.drain_grace_s) == (2, 3.0)


def test_contradicting_the_file_is_an_error() -> None:
    with pytest.raises(OptionsError, match=r"contradicts switchboard\.yaml"):
        resolve_options(CONFIG, agent="other", region=None, pool="eu-central-a", capacity=None)


def test_an_unpinned_pool_needs_agent_and_region() -> None:
    with pytest.raises(OptionsError, match="--agent is required"):
        resolve_options(CONFIG, agent=None, region="eu-west", pool="eu-west-a", capacity=None)
    with pytest.raises(OptionsError, match="--pool is required"):
        resolve_options(CONFIG, agent="a", region="eu-west", pool=None, capacity=None)


def test_invalid_values_are_refused_with_the_field_named() -> None:
    with pytest.raises(OptionsError, match="capacity"):
        resolve_options(CONFIG, agent="a", region="eu-west", pool="p", capacity=0)
    with pytest.raises(OptionsError, match="pool"):
        resolve_options(CONFIG, agent="a", region="eu-west", pool="bad pool", capacity=1)


def test_warm_executors_follow_the_executor_kind() -> None:
    base = {"agent": "a", "region": "eu-west", "pool": "p", "capacity": 4}
    assert resolve_options(CONFIG, **base).warm_executors == 4  # type: ignore[arg-type]
    assert resolve_options(CONFIG, **base, executor="process").warm_executors == 1  # type: ignore[arg-type]
    assert resolve_options(CONFIG, **base, idle_executors=0).warm_executors == 0  # type: ignore[arg-type]


def test_worker_ids_are_unique_per_start() -> None:
    a = resolve_options(CONFIG, agent="a", region="eu-west", pool="p", capacity=1)
    b = resolve_options(CONFIG, agent="a", region="eu-west", pool="p", capacity=1)
    assert a.worker_id != b.worker_id


def test_heartbeats_follow_the_orchestrators_interval_unless_given() -> None:
    config = parse_config({**CONFIG.model_dump(mode="json"), "orchestrator": {"heartbeat_interval_s": 0.5}})
    opts = resolve_options(config, agent=None, region=None, pool="eu-central-a", capacity=None)
    assert opts.heartbeat_interval_s == 0.5
    given = resolve_options(
        config, agent=None, region=None, pool="eu-central-a", capacity=None, heartbeat_interval_s=2.0
    )
    assert given.heartbeat_interval_s == 2.0


@pytest.mark.parametrize(
    ("executor", "option", "environ", "expected"),
    [
        ("thread", None, {}, "0"),  # off: executors share one GIL
        ("process", None, {}, None),  # livekit-agents' default, one GIL per job process
        ("thread", 250, {}, "250"),
        ("thread", None, {LIVEKIT_ENV: "400"}, "400"),  # the user's explicit setting stands
        ("process", 0, {LIVEKIT_ENV: "400"}, "0"),  # the option wins over the environment
    ],
)
def test_the_loop_monitor_is_off_for_threads_by_default(
    executor: str, option: int | None, environ: dict[str, str], expected: str | None
) -> None:
    opts = resolve_options(
        CONFIG,
        agent=None,
        region=None,
        pool="eu-central-a",
        capacity=None,
        executor=executor,
        loop_monitor_ms=option,
    )
    said = configure_loop_monitor(opts, environ)
    assert environ.get(LIVEKIT_ENV) == expected
    assert said.startswith("loop monitor:")
