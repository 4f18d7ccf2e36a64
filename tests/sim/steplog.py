"""The interleaving: one compact line per thing that happened (virtual time, actor, what)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable


class StepLog:
    def __init__(self, clock: Callable[[], float], echo: bool = False) -> None:
        self._clock = clock
        self.lines: list[tuple[float, str, str]] = []
        self.echo = echo

    def add(self, actor: str, text: str) -> None:
        line = (self._clock(), actor, text)
        self.lines.append(line)
        if self.echo:
            print(_format(line), flush=True)

    def render(self, rooms: Iterable[str] = (), tail: int = 60, limit: int = 400) -> str:
        """Every line naming one of ``rooms`` plus the last ``tail`` lines (at most ``limit``),
        in order; an empty ``rooms`` and a large ``tail`` give the whole log."""
        names = [r for r in rooms if r]
        pattern = re.compile("|".join(rf"\b{re.escape(r)}\b" for r in names)) if names else None
        start = max(0, len(self.lines) - tail)
        keep = [
            line
            for i, line in enumerate(self.lines)
            if i >= start or (pattern is not None and pattern.search(line[2]))
        ]
        skipped = max(0, len(keep) - limit)
        out = [f"  ... {skipped} earlier lines not shown ..."] if skipped else []
        out.extend(_format(line) for line in keep[skipped:])
        return "\n".join(out)

    def __len__(self) -> int:
        return len(self.lines)


def _format(line: tuple[float, str, str]) -> str:
    at, actor, text = line
    return f"{at:9.3f}  {actor:<10} {text}"
