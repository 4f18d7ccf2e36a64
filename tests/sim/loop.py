"""An asyncio event loop on virtual time: nothing waits, the clock jumps to the next timer.

``time()`` is a number this loop owns. When no callback is ready, the loop does not block in a
selector: it moves the clock straight to the earliest scheduled timer and runs it, so
``asyncio.sleep``, ``asyncio.timeout`` and ``call_at`` cost no wall time. There is no I/O at all.

Determinism: the ready queue is FIFO (a deque) and timers are a heap on ``when`` whose ties break
by the sequence of pushes and pops — the same every run. The one thing CPython leaves to chance is
the iteration order of *sets of tasks* (a TaskGroup cancels its children in set order, which
follows ``id()``, i.e. memory addresses): tasks made here hash by a per-loop creation number
instead, so they iterate in the same order in every process.

Every task is tagged with the *actor* that created it (a context variable: a replica's name, a
pool, ``world``), inherited by the tasks it creates in turn, so a replica's crash can cancel all
of its tasks, however deep, in creation order.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")

# Who is running: a replica's name, "pool <id>", "livekit", "world". Inherited by child tasks.
ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("sim_actor", default="world")
# What the actor is doing: "sweep", "RoomCreated room-1", "AgentStatus room-1 joined", ...
ACTIVITY: contextvars.ContextVar[str] = contextvars.ContextVar("sim_activity", default="")

# asyncio's own cap on one select() wait; a jump never needs to respect it.
_FOREVER = 24 * 3600.0


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is scheduled: the run can never make progress again."""


class SimTask(asyncio.Task[T]):
    """A task hashed by its creation number (see the module docstring), tagged with its actor."""

    def __init__(
        self,
        coro: Generator[Any, None, T] | Coroutine[Any, Any, T],
        *,
        loop: VirtualLoop,
        seq: int,
        actor: str,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> None:
        # Before the base class runs: it adds the task to asyncio's WeakSet of tasks (a hash).
        self.sim_seq = seq
        self.sim_actor = actor
        super().__init__(coro, loop=loop, name=name, context=context)

    def __hash__(self) -> int:
        return self.sim_seq

    def __eq__(self, other: object) -> bool:
        return self is other


class _JumpingSelector:
    """What ``_run_once`` polls: instead of waiting ``timeout`` seconds, jump the clock there."""

    def __init__(self, loop: VirtualLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise Deadlock("no callback ready and no timer scheduled")
        if timeout > 0:
            self._loop.jump()
        return []

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    """``after_step`` runs after every loop iteration (all callbacks that were ready ran): the
    simulator checks its invariants there and may raise to stop the run."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._now = start
        self._selector = _JumpingSelector(self)
        self._task_seq = 0
        self.after_step: Callable[[], None] | None = None
        # actor -> its live tasks, in creation order (dict as an ordered set)
        self.tasks_by_actor: dict[str, dict[SimTask[Any], None]] = {}
        self.set_exception_handler(_quiet)

    # -- the clock -------------------------------------------------------------------------------

    def time(self) -> float:
        return self._now

    def jump(self) -> None:
        """Move the clock to the earliest live timer (never backwards)."""
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if scheduled:
            self._now = max(self._now, scheduled[0].when())

    # -- what BaseEventLoop leaves to subclasses ---------------------------------------------------

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def _run_once(self) -> None:
        super()._run_once()  # type: ignore[misc]
        if self.after_step is not None:
            self.after_step()

    # -- tasks -----------------------------------------------------------------------------------

    def create_task(  # type: ignore[override]
        self,
        coro: Generator[Any, None, T] | Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> SimTask[T]:
        self._check_closed()  # type: ignore[attr-defined]
        actor = context.get(ACTOR, "world") if context is not None else ACTOR.get()
        self._task_seq += 1
        task = SimTask(coro, loop=self, seq=self._task_seq, actor=actor, name=name, context=context)
        own = self.tasks_by_actor.setdefault(actor, {})
        own[task] = None
        task.add_done_callback(lambda t: own.pop(t, None))
        return task

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, actor: str, activity: str = "", name: str | None = None
    ) -> SimTask[T]:
        """A task running as ``actor`` doing ``activity`` (both inherited by the tasks it makes)."""
        ctx = contextvars.copy_context()
        ctx.run(ACTOR.set, actor)
        ctx.run(ACTIVITY.set, activity)
        return self.create_task(coro, name=name, context=ctx)

    def cancel_actor(self, actor: str) -> int:
        """Cancel every live task of ``actor`` (a crash at whatever await each one is in)."""
        tasks = list(self.tasks_by_actor.get(actor, {}))
        for task in tasks:
            task.cancel()
        return len(tasks)

    def all_sim_tasks(self) -> list[SimTask[Any]]:
        return [t for tasks in self.tasks_by_actor.values() for t in tasks]


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Unhandled errors of fire-and-forget callbacks are the simulator's business, not stderr's:
    the world records what it needs itself (handler and sweep failures)."""


def drain(loop: VirtualLoop) -> None:
    """Cancel every task left and let the cancellations run out (after a run ended or failed).
    The world must have stopped its periodic timers first, or this never runs out of work."""
    loop.after_step = None
    tasks = loop.all_sim_tasks()
    for task in tasks:
        task.cancel()
    waiter = asyncio.ensure_future(_all_done(tasks), loop=loop)
    # A run stopped by a violation may leave its run_until_complete's stop() queued: that stops
    # the first run here early (RuntimeError), so go again.
    for _ in range(3):
        try:
            loop.run_until_complete(waiter)
            break
        except RuntimeError:
            continue
        except Deadlock:
            break
    # Async generators (the partition watches') closed by their tasks' cancellation are only
    # forgotten; one still open is closed (shutdown_asyncgens would make a task for each).
    agens: weakref.WeakSet[Any] = loop._asyncgens  # type: ignore[attr-defined]
    still = [agen for agen in agens if agen.ag_frame is not None]
    agens.clear()
    if still:
        with contextlib.suppress(Deadlock):
            loop.run_until_complete(_close(still))


async def _close(agens: list[Any]) -> None:
    for agen in agens:
        with contextlib.suppress(Exception):
            await agen.aclose()


async def _all_done(tasks: list[SimTask[Any]]) -> None:
    if tasks:
        await asyncio.wait(tasks)
