"""The room state machine: every legal transition works and leaves a timeline line; the rest are refused."""

from __future__ import annotations

import itertools

import pytest

from orchestrator.records import MAX_HISTORY, TERMINAL, RoomRecord, RoomState
from orchestrator.transitions import LEGAL, IllegalTransition, note, transition

S = RoomState
LEGAL_PAIRS = [(a, b) for a, targets in LEGAL.items() for b in sorted(targets)]
ILLEGAL_PAIRS = [(a, b) for a, b in itertools.product(S, S) if b not in LEGAL[a]]


def test_every_state_has_a_rule() -> None:
    assert set(LEGAL) == set(S)


def test_the_design_path_is_legal() -> None:
    path = [S.RECEIVED, S.DISPATCHING, S.DISPATCHED, S.JOINED, S.SPEAKING, S.ENDED]
    rec = RoomRecord(room="r")
    for i, state in enumerate(path[1:]):
        rec = transition(rec, state, now=float(i), event=state.value)
    assert rec.state == S.ENDED and [h.event for h in rec.history] == [s.value for s in path[1:]]


def test_recovery_path_from_speaking_is_legal() -> None:
    rec = RoomRecord(room="r", state=S.SPEAKING, pool="a")
    for state in (S.REDISPATCHING, S.DISPATCHING, S.DISPATCHED):
        rec = transition(rec, state, now=1.0, event="x")
    assert rec.state == S.DISPATCHED


@pytest.mark.parametrize(("src", "dst"), LEGAL_PAIRS, ids=lambda s: s.value)
def test_legal_transition(src: RoomState, dst: RoomState) -> None:
    rec = transition(RoomRecord(room="r", state=src), dst, now=5.0, event="e", detail="d", attempt=3)
    assert rec.state == dst and rec.attempt == 3
    assert rec.history[-1].state == dst and rec.history[-1].at == 5.0 and rec.history[-1].detail == "d"


@pytest.mark.parametrize(("src", "dst"), ILLEGAL_PAIRS, ids=lambda s: s.value)
def test_illegal_transition_is_refused(src: RoomState, dst: RoomState) -> None:
    rec = RoomRecord(room="r", state=src)
    with pytest.raises(IllegalTransition, match=f"{src.value} -> {dst.value}"):
        transition(rec, dst, now=0.0, event="e")


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL:
        assert LEGAL[state] == frozenset()


def test_every_non_terminal_state_can_end_and_fail() -> None:
    for state in set(S) - TERMINAL:
        assert S.ENDED in LEGAL[state] and S.FAILED in LEGAL[state]


def test_history_is_bounded_and_keeps_the_beginning() -> None:
    rec = RoomRecord(room="r")
    for i in range(MAX_HISTORY * 2):
        rec = note(rec, now=float(i), event=f"e{i}")
    assert len(rec.history) == MAX_HISTORY
    assert rec.history[0].event == "e0" and rec.history[-1].event == f"e{MAX_HISTORY * 2 - 1}"


def test_records_are_immutable() -> None:
    rec = RoomRecord(room="r")
    with pytest.raises(Exception, match="frozen"):
        rec.state = S.ENDED  # type: ignore[misc]
