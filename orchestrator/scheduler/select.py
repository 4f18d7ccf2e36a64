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


def sample_two(n: int, seed: int) -> tuple[int, int]:
    """Two distinct indices in ``range(n)`` (n ≥ 2), uniformly over ordered pairs."""
    z = mix64(seed)
    i = z % n
    j = (z >> 32) % (n - 1)
    return i, j + 1 if j >= i else j


def p2c(ranked: Sequence[CandidateScore], seed: int) -> tuple[int, tuple[int, ...]]:
    """Index of the chosen candidate and the indices sampled. ``ranked`` must be rank-ordered, so
    the smaller index is the one with more headroom (or equal headroom and lower pool id)."""
    if len(ranked) == 1:
        return 0, (0,)
    i, j = sample_two(len(ranked), seed)
    return min(i, j), (i, j)


def least_loaded(ranked: Sequence[CandidateScore]) -> tuple[int, tuple[int, ...]]:
    return 0, ()
