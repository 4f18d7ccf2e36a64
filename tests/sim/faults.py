"""What goes wrong, and when: the per-seed fault mix (swarm testing) and scripted rules.

Every stand-in asks :class:`Faults` at each decision point (a KV call, a LiveKit call, a job's
timing, a message's delay) and gets an outcome plus latencies. A random run draws them from the
seed's :class:`FaultMix` — each kind switched on or off per seed, with its own rate, so bugs that
hide in a particular mix get their seeds; some seeds have no faults at all. A scripted scenario
gives :class:`Rule` s instead (fixed faults for chosen calls) and a mix of zeros.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Literal

from tests.sim.config import KV_TIMEOUT_S, LK_TIMEOUT_S

Kind = Literal["kv", "lk", "job"]
# kv: ok | timeout_before (not applied) | timeout_after (applied, answer lost)
# lk: ok | refuse (unreachable, not applied) | lost (applied, answer lost: the caller times out)
#     | error_landed (applied, then a 5xx) | slow (applied after the caller's timeout) | blip (a
#     5xx, not applied) | drop (an outage that does not refuse: not applied, never answered)
# job: ok | none (LiveKit gives the dispatch no job) | mute (joins, never speaks) | error
Outcome = str


@dataclass(frozen=True, slots=True)
class Call:
    """One decision point: which call (or job step), on which room, by whom."""

    kind: Kind
    op: str
    room: str
    actor: str = "world"
    activity: str = ""
    state: str | None = None  # KV writes: the state the record is written in
    attempt: int | None = None  # jobs: the dispatch's attempt
    n: int = 0  # how many calls of (kind, op, room) came before this one


@dataclass(slots=True)
class Rule:
    """A scripted fault: the first ``times`` calls matching every given field get ``outcome``.

    ``delay``: seconds until the server applies the call (or, for a failure before applying, until
    the caller hears of it); for jobs, the delay of that job step. ``answer``: seconds from applying
    to the caller getting the answer.
    """

    kind: Kind
    op: str
    outcome: Outcome = "ok"
    room: str | None = None
    state: str | None = None
    activity: str | None = None  # a prefix of the caller's activity ("sweep", "RoomCreated", ...)
    actor: str | None = None
    attempt: int | None = None
    nth: int | None = None  # only the call with this Call.n
    delay: float | None = None
    answer: float | None = None
    times: int = 1

    def matches(self, call: Call) -> bool:
        return (
            self.times > 0
            and self.kind == call.kind
            and self.op == call.op
            and (self.room is None or self.room == call.room)
            and (self.state is None or self.state == call.state)
            and (self.activity is None or call.activity.startswith(self.activity))
            and (self.actor is None or self.actor == call.actor)
            and (self.attempt is None or self.attempt == call.attempt)
            and (self.nth is None or self.nth == call.n)
        )


@dataclass(frozen=True, slots=True)
class FaultMix:
    """Per-seed fault knobs: probabilities per call or job, counts of timeline events."""

    kv_timeout_before: float = 0.0
    kv_timeout_after: float = 0.0
    kv_outages: int = 0
    watch_lag: float = 0.0  # a watch update up to 1 s late
    lk_refuse: float = 0.0
    lk_lost: float = 0.0
    lk_error_landed: float = 0.0
    lk_slow: float = 0.0
    lk_removal_blip: float = 0.0
    lk_outages: int = 0
    late_job: float = 0.0  # a job assigned or joining late (around the join deadline)
    no_job: float = 0.0  # LiveKit gives a dispatch no job
    agent_mute: float = 0.0  # an agent joins and never speaks
    agent_error: float = 0.0  # an agent reports an error and leaves
    pool_crashes: int = 0
    pool_partitions: int = 0  # a pool's NATS link down: no beats, reports held back
    replica_crashes: int = 0
    msg_dup: float = 0.0  # a message delivered again (its ack lost)
    msg_delay: float = 0.0  # a message delayed up to MSG_DELAY_MAX_S (reordering)
    event_dup: float = 0.0  # a RoomCreated published twice

    @classmethod
    def draw(cls, rng: random.Random) -> FaultMix:
        """Swarm testing: one seed in ten is calm; otherwise each kind is on with probability
        0.35, at a rate of its own."""
        if rng.random() < 0.1:
            return cls()
        values: dict[str, float | int] = {}
        for f in fields(cls):
            on = rng.random() < 0.35
            if f.type == "int":
                values[f.name] = rng.randint(1, 3) if on else 0
            elif f.name.startswith("kv_"):
                values[f.name] = round(rng.uniform(0.01, 0.06), 3) if on else 0.0
            else:
                values[f.name] = round(rng.uniform(0.03, 0.25), 3) if on else 0.0
        return cls(**values)  # type: ignore[arg-type]

    def describe(self) -> str:
        on = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name)]
        return " ".join(on) or "calm (no faults)"


@dataclass(frozen=True, slots=True)
class Plan:
    """What one decision point gets: the outcome, the delay until it takes effect, the answer's."""

    outcome: Outcome
    delay: float
    answer: float


class Faults:
    """Decides outcomes from the rules first, then outages, then the mix. ``heal()`` stops all of
    it: from then on every call succeeds promptly (the world's end phase)."""

    def __init__(self, mix: FaultMix, rng: random.Random, rules: list[Rule] | None = None) -> None:
        self.mix = mix
        self.rules = list(rules or [])
        self._kv = random.Random(rng.getrandbits(64))
        self._lk = random.Random(rng.getrandbits(64))
        self._job = random.Random(rng.getrandbits(64))
        self.msg = random.Random(rng.getrandbits(64))
        self.healed = False
        self.kv_down = False
        self.lk_down = False
        self.lk_down_mode = "refuse"  # during an outage: refuse | drop (unanswered)
        self.fired: list[tuple[Call, Plan]] = []  # scripted rules that fired (for the log)

    def heal(self) -> None:
        self.healed = True
        self.kv_down = False
        self.lk_down = False

    def _rule(self, call: Call) -> Rule | None:
        for rule in self.rules:
            if rule.matches(call):
                rule.times -= 1
                return rule
        return None

    def _scripted(self, call: Call, delay: float, answer: float) -> Plan | None:
        """The plan a scripted rule sets for ``call`` (its timings default to the drawn ones)."""
        rule = self._rule(call)
        if rule is None:
            return None
        return Plan(
            rule.outcome,
            rule.delay if rule.delay is not None else delay,
            rule.answer if rule.answer is not None else answer,
        )

    # -- KV ----------------------------------------------------------------------------------------

    def kv(self, call: Call) -> Plan:
        r = self._kv
        delay, answer = r.uniform(0.0005, 0.003), r.uniform(0.0005, 0.003)
        if (scripted := self._scripted(call, delay, answer)) is not None:
            return scripted
        if self.healed:
            return Plan("ok", delay, answer)
        if self.kv_down:
            return Plan("timeout_before", KV_TIMEOUT_S, 0.0)
        u = r.random()
        m = self.mix
        if u < m.kv_timeout_before:
            return Plan("timeout_before", KV_TIMEOUT_S, 0.0)
        if u < m.kv_timeout_before + m.kv_timeout_after and call.op != "get":
            return Plan("timeout_after", delay, KV_TIMEOUT_S)
        return Plan("ok", delay, answer)

    def watch_lag(self) -> float:
        r = self._kv
        if not self.healed and self.mix.watch_lag and r.random() < self.mix.watch_lag:
            return r.uniform(0.05, 1.0)
        return r.uniform(0.001, 0.02)

    # -- LiveKit -------------------------------------------------------------------------------------

    def lk(self, call: Call) -> Plan:
        r = self._lk
        delay, answer = r.uniform(0.005, 0.04), r.uniform(0.005, 0.04)
        if (scripted := self._scripted(call, delay, answer)) is not None:
            return scripted
        if self.healed:
            return Plan("ok", delay, answer)
        if self.lk_down:
            return Plan(self.lk_down_mode, 0.01, 0.0)
        m = self.mix
        mutating = call.op in ("create_dispatch", "delete_dispatch", "remove_participant")
        removal = call.op in ("delete_dispatch", "remove_participant")
        u = r.random()
        for outcome, p in (
            ("refuse", m.lk_refuse),
            ("lost", m.lk_lost),
            ("slow", m.lk_slow),
            ("error_landed", m.lk_error_landed if mutating else 0.0),
            ("blip", m.lk_removal_blip if removal else 0.0),
        ):
            if u < p:
                if outcome == "slow":
                    return Plan("slow", LK_TIMEOUT_S + r.uniform(0.05, 3.0), answer)
                return Plan(outcome, delay, answer)
            u -= p
        return Plan("ok", delay, answer)

    # -- jobs (LiveKit's assignment, the worker's timing) ---------------------------------------------

    def job(self, call: Call) -> Plan:
        """``assign``: the delay from CreateDispatch to the job (outcome none: no job at all);
        ``join``: from the job to the agent in the room; ``voice``: from joined to heard (outcome
        mute: never; error: the agent fails instead, after that delay)."""
        r = self._job
        rule = self._rule(call)
        m = self.mix
        late = not self.healed and r.random() < m.late_job
        if call.op == "assign":
            delay = r.uniform(0.05, 0.5)
            if late:
                delay += r.uniform(5.0, 14.0)
            outcome = "none" if not self.healed and r.random() < m.no_job else "ok"
        elif call.op == "join":
            delay = r.uniform(0.3, 2.0)
            if late:
                delay += r.uniform(5.0, 14.0)
            outcome = "ok"
        else:  # voice
            delay = r.uniform(0.2, 1.5)
            u = r.random()
            outcome = "ok"
            if not self.healed and u < m.agent_mute:
                outcome = "mute"
            elif not self.healed and u < m.agent_mute + m.agent_error:
                outcome = "error"
        if rule is not None:
            return Plan(rule.outcome, rule.delay if rule.delay is not None else delay, 0.0)
        return Plan(outcome, delay, 0.0)
