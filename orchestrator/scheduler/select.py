"""Selection: pick one pool among a tier's ranked candidates.

``p2c`` (power of two choices): sample two distinct candidates, keep the one with more headroom
(tie: lower pool id). Many orchestrator replicas deciding on the same snapshot — each knowing only
its own reservations — then spread a burst instead of all picking the same "best" pool, while the
choice still leans strongly toward free pools. ``least_loaded``: always the most headroom; herds.

Randomness comes only from the ``seed`` argument, through SplitMix64 rather than
``random.Random(seed)``: seeding a Mersenne Twister costs ~4 µs, more than a whole decision, and
two indices need only one well-mixed 64-bit word.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from orchestrator.scheduler.model import CandidateScore

_MASK64 = (1 << 64) - 1


def mix64(seed: int) -> int:
    """SplitMix64 finaliser: a well-spread 64-bit word from any int seed (stable across runs)."""
    z = (seed + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def decision_seed(base: int, room: str, attempt: int) -> int:
    """A per-decision seed: stable for (base, room, attempt), different across rooms and attempts.

    Uses BLAKE2b, not ``hash()``, which Python randomises per process — replicas must agree.
    """
    digest = hashlib.blake2b(f"{base}\x00{room}\x00{attempt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def outranks(a: CandidateScore, b: CandidateScore) -> bool:
    """``a`` ranks before ``b``: more headroom, or equal headroom and a lower pool id."""
    return a.headroom > b.headroom or (a.headroom == b.headroom and a.pool < b.pool)


def p2c(candidates: Sequence[CandidateScore], seed: int) -> tuple[int, int]:
    """(chosen index, the other sampled index; -1 when there was a single candidate).

    Samples two distinct indices uniformly over ordered pairs and keeps the better-ranked one.
    """
    n = len(candidates)
    if n == 1:
        return 0, -1
    # mix64 inlined: this runs once per decision.
    z = (seed + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    i = z % n
    j = (z >> 32) % (n - 1)
    if j >= i:
        j += 1
    a, b = candidates[i], candidates[j]
    if a.headroom > b.headroom or (a.headroom == b.headroom and a.pool < b.pool):
        return i, j
    return j, i


def least_loaded(candidates: Sequence[CandidateScore], ranked: int) -> tuple[int, int]:
    """The best-ranked candidate (most headroom, then lowest pool id). Nothing is sampled.

    The first ``ranked`` candidates are already in rank order, so only the first of them competes
    with the re-scored rest.
    """
    best = 0 if ranked else None
    for k in range(ranked, len(candidates)):
        if best is None or outranks(candidates[k], candidates[best]):
            best = k
    assert best is not None, "least_loaded needs at least one candidate"
    return best, -1
