"""Loading ``--entrypoint``: the default agent, a user's function, and clear errors otherwise."""

from __future__ import annotations

import pytest

from agent_worker import default_agent
from agent_worker.entrypoints import EntrypointError, load_entrypoint
from tests.agents import custom_agent


def test_default_is_the_speaking_agent() -> None:
    assert load_entrypoint(None) is default_agent.entrypoint


def test_a_user_entrypoint_loads() -> None:
    assert load_entrypoint("tests.agents.custom_agent:entrypoint") is custom_agent.entrypoint


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("tests.agents.custom_agent", "must look like"),
        ("no.such.module:entrypoint", "cannot import"),
        ("tests.agents.custom_agent:missing", "has no attribute"),
        ("tests.agents.custom_agent:RATE", "must be an async function"),
    ],
)
def test_bad_references_say_why(reference: str, problem: str) -> None:
    with pytest.raises(EntrypointError, match=problem):
        load_entrypoint(reference)
