"""Which replica tracks which rooms: rooms hash into a fixed number of partitions, and the live
replicas divide the partitions among themselves — every replica computing the same answer from
the same membership, with no coordinator.

Ownership decides only who *tracks* a room (its timers, its failover, its resync): every write is
still a compare-and-set under claims and leases, so two replicas that both believe they own a
partition for a moment (a membership change seen at different times) only look twice.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping

# Fixed for good: a room's partition is part of its KV key (`p<nn>.…`), so a replica's watch is
# filtered by the server. 32 keeps 3 replicas within ±6 % of an equal share (11/11/10) and lets
# a deployment grow to 32 replicas that all track rooms.
PARTITIONS = 32


def partition_of(room: str) -> int:
    """The room's partition: a stable hash of its name (BLAKE2b, the same in every process)."""
    digest = hashlib.blake2b(room.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % PARTITIONS


@functools.lru_cache(maxsize=4096)
def _score(member: str, partition: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{member}/{partition}".encode(), digest_size=8).digest(), "big")


def assign(members: Iterable[str], partitions: int = PARTITIONS) -> dict[int, str]:
    """Partition -> member: rendezvous hashing with bounded load.

    Each partition goes to the member that scores highest for it, unless that member already has
    its fair share, then to the next. A fair share is ``partitions // members``, one more for the
    first ``partitions % members`` members in a hashed order, so shares differ by at most one
    partition, and a member joining or leaving moves few partitions besides its own.
    """
    ranked = sorted(set(members))
    if not ranked:
        return {}
    base, extra = divmod(partitions, len(ranked))
    by_hash = sorted(ranked, key=lambda m: (-_score(m, -1), m))
    cap = {m: base + (1 if i < extra else 0) for i, m in enumerate(by_hash)}
    load = dict.fromkeys(ranked, 0)
    owners: dict[int, str] = {}
    for partition in range(partitions):
        for member in sorted(ranked, key=lambda m: (-_score(m, partition), m)):
            if load[member] < cap[member]:
                owners[partition] = member
                load[member] += 1
                break
    return owners


def owned_by(owners: Mapping[int, str], member: str) -> frozenset[int]:
    return frozenset(p for p, m in owners.items() if m == member)
