"""The room controller as a reconciler: pure decisions, one effects executor, one loop.

- :mod:`.decide` — ``(record, fact, context) → Step``, no I/O;
- :mod:`.effects` — LiveKit calls, returned as outcome facts;
- :mod:`.reconciler` — the loop: decide, write (CAS), perform, repeat; the inputs;
- :mod:`.sweep` — due timers, one isolated step per room;
- :mod:`.lease`, :mod:`.locks`, :mod:`.observe`, :mod:`.ports`.
"""

from orchestrator.room.reconciler import Clocks, Reconciler

__all__ = ["Clocks", "Reconciler"]
