"""Which agent a room gets: the operator's rules (room-name glob → agent), highest priority first.

Pure functions over :class:`shared.config.Rule`. Every answer carries a sentence saying why, so the
decision record and ``explain`` can show it verbatim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from shared.config import Rule

# Characters that make a glob more than a literal name (fnmatch syntax).
_GLOB_CHARS = frozenset("*?[")
# How many rule names a "no rule matches" reason lists before it abbreviates.
_LISTED_RULES = 5


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """The rule that applies to a room (``None``: no rule does) and why."""

    rule: Rule | None
    reason: str


def _describe(rule: Rule) -> str:
    return f"rule {rule.name!r} (glob {rule.match!r}, priority {rule.priority})"


def match_rule(room: str, rules: Sequence[Rule]) -> RuleMatch:
    """Return the matching rule with the highest priority; ties go to the rule listed first.

    Globs are case-sensitive (:func:`fnmatch.fnmatchcase`): LiveKit room names are.
    """
    best: Rule | None = None
    for rule in rules:
        # Strictly greater: an equal priority later in the file never displaces an earlier rule.
        if fnmatchcase(room, rule.match) and (best is None or rule.priority > best.priority):
            best = rule
    if best is not None:
        return RuleMatch(best, f"matched {_describe(best)}")
    if not rules:
        return RuleMatch(None, f"no rule matches room {room!r} (no rules configured)")
    listed = ", ".join(f"{r.name!r} ({r.match!r})" for r in rules[:_LISTED_RULES])
    more = f", and {len(rules) - _LISTED_RULES} more" if len(rules) > _LISTED_RULES else ""
    return RuleMatch(None, f"no rule matches room {room!r} ({len(rules)} rules checked: {listed}{more})")


def _literal_prefix(glob: str) -> str:
    for i, ch in enumerate(glob):
        if ch in _GLOB_CHARS:
            return glob[:i]
    return glob


def _covers(wide: str, narrow: str) -> bool:
    """True when glob ``wide`` certainly matches every name glob ``narrow`` matches.

    Conservative: a False means "could not prove it", never "they are disjoint". Glob inclusion in
    general is a regular-language question; these cases catch the mistakes operators actually make
    (a catch-all above a specific rule, a duplicate, a broader prefix).
    """
    if wide == narrow or wide == "*":
        return True
    if not (_GLOB_CHARS & set(narrow)):
        return fnmatchcase(narrow, wide)
    # "prefix*" covers any glob whose literal prefix starts with "prefix".
    if wide.endswith("*") and not (_GLOB_CHARS & set(wide[:-1])):
        return _literal_prefix(narrow).startswith(wide[:-1])
    return False


def validate_rules(rules: Sequence[Rule]) -> list[str]:
    """Warnings about rules that can never win (shadowed entirely by a rule that beats them).

    Meant for startup logs and ``doctor``; an empty list means nothing suspicious was found.
    """
    warnings: list[str] = []
    for i, narrow in enumerate(rules):
        for j, wide in enumerate(rules):
            if i == j:
                continue
            # ``wide`` wins over ``narrow`` on priority, or on file order at equal priority.
            beats = wide.priority > narrow.priority or (wide.priority == narrow.priority and j < i)
            if beats and _covers(wide.match, narrow.match):
                warnings.append(
                    f"{_describe(narrow)} never applies: {_describe(wide)} matches every room it matches"
                )
                break
    return warnings
