"""The pool control message (shared.control.PoolCommand) on the wire."""

from __future__ import annotations

import pytest

from shared.codec import ContractError, decode, encode
from shared.control import PoolCommand


def test_round_trip() -> None:
    command = PoolCommand(command="drain", reason="maintenance", worker="host-1-ab12")
    assert decode(PoolCommand, encode(command)) == command


def test_unknown_commands_are_refused() -> None:
    with pytest.raises(ContractError, match="command"):
        decode(PoolCommand, b'{"v":1,"command":"reboot"}')
