"""Rule matching: glob on the room name, highest priority wins, ties go to the earlier rule."""

from __future__ import annotations

import pytest

from orchestrator.rules import match_rule, validate_rules
from shared.config import Rule


def rule(name: str, match: str, priority: int = 0, agent: str = "agent") -> Rule:
    return Rule(name=name, match=match, agent=agent, priority=priority)


RULES = [
    rule("catch-all", "*", priority=0, agent="generic"),
    rule("ornina", "ornina-*", priority=10, agent="ornina-avatar-agent"),
    rule("ornina-vip", "ornina-vip-*", priority=20, agent="vip-agent"),
    rule("support", "support-??", priority=5, agent="support-agent"),
]


@pytest.mark.parametrize(
    ("room", "expected"),
    [
        ("ornina-123", "ornina"),
        ("ornina-vip-1", "ornina-vip"),
        ("support-42", "support"),
        ("support-420", "catch-all"),  # '??' is exactly two characters
        ("ORNINA-1", "catch-all"),  # case-sensitive, like LiveKit room names
        ("lobby", "catch-all"),
    ],
)
def test_highest_priority_matching_rule_wins(room: str, expected: str) -> None:
    match = match_rule(room, RULES)
    assert match.rule is not None and match.rule.name == expected
    assert f"rule {expected!r}" in match.reason


def test_reason_names_glob_and_priority() -> None:
    assert match_rule("ornina-1", RULES).reason == "matched rule 'ornina' (glob 'ornina-*', priority 10)"


def test_equal_priority_goes_to_the_rule_listed_first() -> None:
    rules = [rule("first", "a-*", 3), rule("second", "a-*", 3), rule("third", "*", 3)]
    assert match_rule("a-1", rules).rule == rules[0]
    assert match_rule("a-1", list(reversed(rules))).rule == rules[2]


def test_no_match_lists_rules_checked() -> None:
    rules = [rule("a", "a-*"), rule("b", "b-*"), rule("c", "c-*")]
    match = match_rule("x", rules)
    assert match.rule is None
    assert match.reason == "no rule matches room 'x' (3 rules checked: 'a' ('a-*'), 'b' ('b-*'), 'c' ('c-*'))"


def test_no_match_abbreviates_long_rule_lists() -> None:
    rules = [rule(f"r{i}", f"r{i}-*") for i in range(8)]
    assert match_rule("x", rules).reason.endswith("'r4' ('r4-*'), and 3 more)")


def test_no_rules_configured() -> None:
    assert match_rule("x", []).reason == "no rule matches room 'x' (no rules configured)"


def test_character_classes() -> None:
    assert match_rule("room-7", [rule("digits", "room-[0-9]")]).rule is not None
    assert match_rule("room-x", [rule("digits", "room-[0-9]")]).rule is None


@pytest.mark.parametrize(
    ("rules", "shadowed"),
    [
        ([rule("all", "*", 5), rule("specific", "a-*", 1)], ["specific"]),
        ([rule("wide", "a-*", 1), rule("narrow", "a-b-*", 1)], ["narrow"]),
        ([rule("wide", "a-*", 1), rule("literal", "a-room", 0)], ["literal"]),
        ([rule("one", "x-*"), rule("dup", "x-*")], ["dup"]),
        # A narrower rule with higher priority is reachable: nothing to warn about.
        ([rule("all", "*", 0), rule("specific", "a-*", 1)], []),
        ([rule("a", "a-*"), rule("b", "b-*")], []),
        # Not provably covered (class vs prefix): conservative, no warning.
        ([rule("wide", "a?-*", 5), rule("narrow", "ab-*", 1)], []),
    ],
)
def test_validate_rules_reports_rules_that_never_apply(rules: list[Rule], shadowed: list[str]) -> None:
    warnings = validate_rules(rules)
    assert len(warnings) == len(shadowed)
    for name, warning in zip(shadowed, warnings, strict=True):
        assert warning.startswith(f"rule {name!r}") and "never applies" in warning
