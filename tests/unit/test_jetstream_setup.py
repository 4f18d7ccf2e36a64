"""A replica's JetStream set-up waits out a cluster that is still settling, and no longer."""

from __future__ import annotations

from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import ServiceUnavailableError

from orchestrator import jetstream_setup
from shared.config import OrchestratorConfig


async def test_set_up_is_retried_while_jetstream_is_not_ready(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    answers: list[BaseException | str] = [NatsTimeoutError(), ServiceUnavailableError(), "handles"]

    async def settling(*_: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(jetstream_setup, "_open", settling)
    got = await jetstream_setup.open_jetstream(None, OrchestratorConfig(), 1, ())  # type: ignore[arg-type]
    assert got == "handles"
    assert not answers
    assert sum("JetStream not ready" in r.getMessage() for r in caplog.records) == 2


async def test_other_errors_fail_the_start_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0

    async def broken(*_: Any) -> Any:
        nonlocal calls
        calls += 1
        raise PermissionError("permissions violation")

    monkeypatch.setattr(jetstream_setup, "_open", broken)
    with pytest.raises(PermissionError):
        await jetstream_setup.open_jetstream(None, OrchestratorConfig(), 1, ())  # type: ignore[arg-type]
    assert calls == 1
