"""Secrets are SecretStr: printing, logging or raising a settings object never shows them."""

from __future__ import annotations

import logging

import pytest

from shared.logs import configure_logging
from shared.settings import Settings

SECRET = "s3cr3t-value-that-must-never-leak-0123456789"


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    monkeypatch.setenv("NATS_PASSWORD", SECRET + "-nats")
    return Settings()


def test_secret_is_read(settings: Settings) -> None:
    assert settings.livekit.api_secret.get_secret_value() == SECRET


def test_print_repr_str_and_dump_hide_the_secret(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    print(settings)
    print(repr(settings))
    print(settings.model_dump())
    print(settings.model_dump_json())
    out = capsys.readouterr().out
    assert SECRET not in out
    assert "**********" in out


def test_logging_the_settings_hides_the_secret(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings: %s / %r", settings, settings.livekit)
    assert SECRET not in caplog.text


def test_exception_carrying_the_settings_hides_the_secret(settings: Settings) -> None:
    try:
        raise RuntimeError(f"failed with {settings}")
    except RuntimeError as exc:
        assert SECRET not in str(exc) and SECRET not in repr(exc)


def test_log_redaction_masks_a_secret_that_slipped_into_a_message(
    settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json", secrets=settings.secrets())
    try:
        logging.getLogger("test").error(
            "curl -H 'secret: %s'", settings.livekit.api_secret.get_secret_value()
        )
    finally:
        logging.getLogger().handlers.clear()
    err = capfd.readouterr().err
    assert SECRET not in err
    assert "[REDACTED]" in err
