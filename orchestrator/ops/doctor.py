"""`switchboard doctor`: gather facts, run the checks, print one line per check with the fix."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from orchestrator.ops.doctor_checks import CheckResult

_MARK = {True: ("✔", "green"), False: ("✘", "red"), None: ("·", "dim")}


def print_results(console: Console, results: Sequence[CheckResult]) -> None:
    for r in results:
        mark, style = _MARK[r.ok]
        line = Text(f"{mark} ", style=style)
        line.append(f"{r.name}: ", style="bold")
        line.append(r.detail)
        console.print(line, soft_wrap=True)
        if r.ok is False and r.fix:
            console.print(Text(f"    fix: {r.fix}", style="yellow"), soft_wrap=True)
    failed = sum(1 for r in results if r.ok is False)
    if failed:
        console.print(Text(f"{failed} problem{'s' if failed != 1 else ''} found", style="bold red"))
    else:
        console.print(Text("all checks passed", style="bold green"))
