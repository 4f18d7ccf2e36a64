"""The profile summary: shares of py-spy's raw samples, inclusive per function and by own time."""

from __future__ import annotations

from bench.profile import summarize

RAW = "\n".join(
    [
        "main (x.py:1);handle (orchestrator/room/reconciler.py:10);_call (orchestrator/gw.py:5) 6",
        "main (x.py:1);handle (orchestrator/room/reconciler.py:12);commit (orchestrator/store.py:3) 3",
        "main (x.py:1);loop (asyncio/runners.py:2) 1",
        "",
    ]
)


def test_shares_are_inclusive_per_function_whatever_the_line() -> None:
    total, top, own = summarize(RAW)
    assert total == 10
    shares = {f: s for s, f in top}
    # Lines 10 and 12 of one function count as one; its callees are inside its share.
    assert shares["handle (orchestrator/room/reconciler.py)"] == 0.9
    assert shares["_call (orchestrator/gw.py)"] == 0.6
    assert "main (x.py)" not in shares  # not a frame of ours: the table names ours only
    assert own[0] == (0.6, "_call (orchestrator/gw.py)")
    assert summarize("") == (0, [], [])
