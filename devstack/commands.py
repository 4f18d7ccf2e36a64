"""How the kit runs the switchboard CLI as a child process (dev stack, tests and bench alike)."""

from __future__ import annotations

import sys
from pathlib import Path


def switchboard_command() -> list[str]:
    beside = Path(sys.executable).parent / "switchboard"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-c", "from switchboard.cli import main; main()"]
