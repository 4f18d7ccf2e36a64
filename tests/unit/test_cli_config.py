"""Config checks at start: fatal problems exit 2 with a message naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from switchboard.cli import app


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("rules: [{name: a, match: 'x[', agent: b}]\n", "unbalanced"),
        ("rulez: []\n", "'rulez' is not allowed"),
        ("regions: {eu: {neighbours: [mars]}}\n", "'mars'"),
        ("rules: [\n", "not valid YAML"),
    ],
)
def test_orchestrator_refuses_a_bad_config(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "switchboard.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["orchestrator", "--config", str(path)])
    assert result.exit_code == 2
    assert words in result.output and str(path) in result.output


def test_missing_config_file_says_how_to_fix_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["orchestrator", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read config file" in result.output and "SWITCHBOARD_CONFIG" in result.output


def test_shadowed_rule_is_a_warning_not_an_error(tmp_path: Path) -> None:
    from orchestrator.runtime import load_config_or_exit
    from shared.settings import Settings

    path = tmp_path / "switchboard.yaml"
    path.write_text(
        "rules:\n"
        "  - {name: all, match: '*', agent: a, priority: 10}\n"
        "  - {name: some, match: 'x-*', agent: b}\n"
    )
    config = load_config_or_exit(Settings(config=path))
    assert [r.name for r in config.rules] == ["all", "some"]
