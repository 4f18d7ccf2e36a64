"""The Dockerfile, read as data: stages and instructions.

tests/unit/test_dockerfile.py lints it; tests/integration/test_image_install.py re-runs its build stage
in a clean venv. Only what the Dockerfile uses is understood: line continuations, comments, global
ARGs, ``FROM image AS name``, and leading ``--flag=value`` options (``COPY --from``, ``RUN --mount``).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    args: str  # everything after the keyword, continuation lines joined

    def split_flags(self) -> tuple[dict[str, str], str]:
        """Leading ``--name=value`` options and the rest, e.g. ``COPY --from=build /a /a``."""
        flags: dict[str, str] = {}
        rest = self.args
        while rest.startswith("--"):
            token, _, rest = rest.partition(" ")
            name, _, value = token[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        return flags, rest

    def words(self) -> list[str]:
        """The arguments as a list: exec form (JSON) or shell-style words."""
        _, rest = self.split_flags()
        if rest.startswith("["):
            words: list[str] = json.loads(rest)
            return words
        return shlex.split(rest)

    def assignments(self) -> dict[str, str]:
        """``ENV``/``ARG``/``LABEL`` as a mapping: ``K=V K2="V 2"`` or ``ENV K V``; a bare ``ARG K`` is ''."""
        words = shlex.split(self.args)
        if self.keyword == "ENV" and len(words) >= 2 and "=" not in words[0]:
            return {words[0]: " ".join(words[1:])}
        return {w.partition("=")[0]: w.partition("=")[2] for w in words}


@dataclass
class Stage:
    base: str  # the FROM image, global ARGs substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ENV, in order (``$VAR`` references to earlier ENVs resolved, others left as is)."""
        env: dict[str, str] = {}
        for ins in self.all("ENV"):
            for key, value in ins.assignments().items():
                env[key] = substitute(value, env)
        return env

    def args(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.all("ARG"):
            out.update(ins.assignments())
        return out


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"the Dockerfile has no stage named {name!r}")

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def substitute(text: str, variables: dict[str, str]) -> str:
    return _VAR.sub(lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


def instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit inside a continued instruction too
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical = pending + line
        pending = ""
        keyword, _, args = logical.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def parse(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions(path.read_text()):
        if ins.keyword == "FROM":
            words = shlex.split(ins.args)
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(substitute(words[0], global_args), name))
        elif not stages:
            assert ins.keyword == "ARG", f"only ARG may come before the first FROM, not {ins.keyword}"
            global_args.update(ins.assignments())
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(global_args, stages)
