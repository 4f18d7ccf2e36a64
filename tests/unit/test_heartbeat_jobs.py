"""A worker's job list in its beats: whole now and then, what changed in between; the registry
rebuilds the same list from them, and knows when it cannot."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.pools import PoolRegistry
from shared.codec import ContractError, decode, encode
from shared.heartbeat_jobs import FULL_EVERY, SMALL, JobListSender
from shared.messages import JobsDelta, PoolHeartbeat


def beat(seq: int, fields: dict[str, Any], worker: str = "w1") -> PoolHeartbeat:
    return PoolHeartbeat(
        pool="eu-a",
        agent="ornina",
        region="eu-central",
        agent_name="ornina.eu-a",
        worker=worker,
        capacity=2000,
        active=0,
        load=0.0,
        version="1",
        seq=seq,
        at=datetime.now(UTC),
        **fields,
    )


def test_a_short_list_goes_whole_without_the_new_fields() -> None:
    sender = JobListSender()
    for seq in range(3):
        fields = sender.fields(seq, [f"AD_{i}" for i in range(SMALL)])
        sender.sent()
        assert fields == {"jobs": [f"AD_{i}" for i in range(SMALL)]}
    # What a build before the deltas reads: no field it does not know.
    assert "jobs_epoch" not in encode(beat(3, fields)).decode()


def test_a_long_list_goes_whole_then_as_changes_and_whole_again_every_few_beats() -> None:
    sender = JobListSender(epoch="e1")
    jobs = [f"AD_{i}" for i in range(100)]
    first = sender.fields(0, jobs)
    sender.sent()
    assert first == {"jobs": jobs, "jobs_epoch": "e1"}
    kinds = []
    for seq in range(1, 2 * FULL_EVERY + 1):
        jobs = [*jobs[1:], f"AD_new{seq}"]
        fields = sender.fields(seq, jobs)
        sender.sent()
        delta = fields.get("jobs_delta")
        kinds.append("delta" if delta else "whole")
        if delta is not None:
            assert (delta.base, delta.added, len(delta.removed)) == (seq - 1, [f"AD_new{seq}"], 1)
            assert fields["jobs"] == []
    assert kinds.count("whole") == 2 and kinds[FULL_EVERY - 1] == "whole"


def test_a_beat_not_sent_makes_the_next_one_whole() -> None:
    sender = JobListSender(epoch="e1")
    jobs = [f"AD_{i}" for i in range(100)]
    sender.fields(0, jobs)
    sender.sent()
    sender.fields(1, jobs)
    sender.lost()
    assert sender.fields(1, jobs) == {"jobs": jobs, "jobs_epoch": "e1"}


def test_a_delta_needs_its_epoch_and_no_jobs_beside_it() -> None:
    good = beat(1, {"jobs_epoch": "e1", "jobs_delta": JobsDelta(base=0, added=["AD_1"])})
    assert decode(PoolHeartbeat, encode(good)) == good
    with pytest.raises(ValueError, match="jobs_epoch"):
        beat(1, {"jobs_delta": JobsDelta(base=0)})
    with pytest.raises(ValueError, match="empty jobs"):
        beat(1, {"jobs": ["AD_1"], "jobs_epoch": "e1", "jobs_delta": JobsDelta(base=0)})
    raw = encode(good).replace(b'"jobs_epoch":"e1",', b"")
    with pytest.raises(ContractError):
        decode(PoolHeartbeat, raw)


@pytest.mark.parametrize("seed", range(10))
def test_the_registry_rebuilds_every_list_and_says_when_it_cannot(seed: int) -> None:
    rng = random.Random(seed)
    reg = PoolRegistry(heartbeat_interval_s=1.0, dead_after_missed_beats=3)
    senders = {w: JobListSender() for w in ("w1", "w2")}
    jobs: dict[str, list[str]] = {w: [] for w in senders}
    seqs = dict.fromkeys(senders, 0)
    missed = dict.fromkeys(senders, False)  # a beat since the last one this replica read
    complete = dict.fromkeys(senders, True)
    read: dict[str, list[str]] = {}  # each worker's list in the last beat this replica read
    next_id = 0
    for step in range(400):
        now = step * 0.1
        w = rng.choice(list(senders))
        keep = [j for j in jobs[w] if rng.random() > 0.05]  # a few jobs end, a few start
        size = rng.choice((5, 40, 200)) if rng.random() < 0.05 else len(keep) + rng.randint(0, 6)
        while len(keep) < size:
            next_id += 1
            keep.append(f"AD_{next_id}")
        jobs[w] = keep[:size]
        hb = beat(seqs[w], senders[w].fields(seqs[w], jobs[w]), worker=w)
        senders[w].sent()
        seqs[w] += 1
        if rng.random() < 0.05:
            missed[w] = True  # published, but this replica did not read it
            continue
        reg.observe(decode(PoolHeartbeat, encode(hb)), now)
        if hb.jobs_delta is None:
            complete[w] = True
        elif missed[w]:
            complete[w] = False
        missed[w] = False
        read[w] = list(jobs[w])
        assert reg.jobs_complete("eu-a", now) == all(complete[x] for x in read)
        view = reg.view("eu-a", now)
        assert view is not None
        if all(complete[x] for x in read):
            assert set(view.jobs) == {j for x in read for j in read[x]}, step
        for x in read:
            if complete[x]:
                assert all(j in view.jobs for j in read[x]), (step, x)
