"""Which pools and workers are alive.

First choice: ask the orchestrator replicas (:func:`ask_orchestrators`): one answers at once with
the pools as it judges them, which is also what its scheduler acts on. Without an answer (no
replica runs, or it is still warming up), learn it the way the orchestrator does, from heartbeats:
a CLI process has no history, so it listens for about 1.5 heartbeat intervals — long enough to hear
every live worker at least once — and folds what it heard into a :class:`PoolRegistry` (pinned
pools from the config included, so a pool that never beat still shows up, as dead).
"""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from orchestrator.pools import FORGET_AFTER_S, PoolRegistry, view_of
from orchestrator.scheduler import PoolView
from shared import subjects
from shared.codec import ContractError, decode
from shared.config import SwitchboardConfig
from shared.messages import PoolCensusReply, PoolHeartbeat

log = logging.getLogger(__name__)

# Listening window in heartbeat intervals: every live worker beats at least once within it.
LISTEN_INTERVALS = 1.5
# Where a pool list came from when no replica answered (``status --json``: ``pools_from``).
HEARD = "heartbeats"
# How long a replica gets to answer the census request (it answers from memory, in milliseconds).
ASK_TIMEOUT_S = 0.5


class PoolCensus:
    """Latest heartbeat per worker, and the registry's per-pool views of them."""

    def __init__(self, config: SwitchboardConfig) -> None:
        cfg = config.orchestrator
        self.heartbeat_interval_s = cfg.heartbeat_interval_s
        self.registry = PoolRegistry(cfg.heartbeat_interval_s, cfg.dead_after_missed_beats, config.pools)
        self._beats: dict[str, dict[str, tuple[PoolHeartbeat, float]]] = {}

    def observe(self, hb: PoolHeartbeat, now: float) -> None:
        self.registry.observe(hb, now)
        self._beats.setdefault(hb.pool, {})[hb.worker] = (hb, now)

    def views(self, now: float) -> list[PoolView]:
        """The pools at ``now``. A long-running census (``status --watch``, ``dev``) forgets workers
        silent for :data:`FORGET_AFTER_S` here, as the orchestrator's sweep does."""
        for gone in self.registry.prune(now, FORGET_AFTER_S):
            pool, worker = gone.split("/", 1)  # pool ids have no "/"
            beats = self._beats.get(pool, {})
            beats.pop(worker, None)
            if not beats:
                self._beats.pop(pool, None)
        return self.registry.snapshot(now)

    def workers_of(self, pool: str, now: float) -> list[PoolHeartbeat]:
        """Workers of ``pool`` that beat within the dead limit, sorted by worker id."""
        limit = self.registry.dead_after_s
        beats = self._beats.get(pool, {})
        return [hb for _, (hb, seen) in sorted(beats.items()) if now - seen < limit]

    async def on_msg(self, msg: Msg) -> None:
        try:
            hb = decode(PoolHeartbeat, msg.data)
        except ContractError as err:
            log.debug("ignored a malformed heartbeat on %s: %s", msg.subject, err)
            return
        self.observe(hb, asyncio.get_running_loop().time())


async def listen(nc: NATS, census: PoolCensus, seconds: float | None = None) -> None:
    """Feed ``census`` from the heartbeat subject for ``seconds`` (default ~1.5 intervals)."""
    window = census.heartbeat_interval_s * LISTEN_INTERVALS if seconds is None else seconds
    sub = await nc.subscribe(subjects.POOL_HEARTBEAT_WILDCARD, cb=census.on_msg)
    try:
        # Heartbeats are a periodic signal: sampling it for a window is the only way to hear them.
        await asyncio.sleep(window)
    finally:
        await sub.unsubscribe()


async def take_census(nc: NATS, config: SwitchboardConfig, seconds: float | None = None) -> PoolCensus:
    census = PoolCensus(config)
    await listen(nc, census, seconds)
    return census


async def ask_orchestrators(nc: NATS, timeout_s: float = ASK_TIMEOUT_S) -> tuple[str, list[PoolView]] | None:
    """The pools as one orchestrator replica judges them, and which replica said so; None when no
    replica answers in time (none runs, or one from before the census existed)."""
    try:
        reply = await nc.request(subjects.POOL_CENSUS, b"", timeout=timeout_s)
        answer = decode(PoolCensusReply, reply.data)
    except (NoRespondersError, NatsTimeoutError, TimeoutError):
        return None
    except ContractError as err:
        log.warning("ignored the orchestrator's pool census: %s", err)
        return None
    return answer.replica, [view_of(p) for p in answer.pools]


async def current_pools(nc: NATS, config: SwitchboardConfig) -> tuple[str, list[PoolView]]:
    """The pools now, and where that came from: an orchestrator replica's own view when one answers
    ("orchestrator <replica>"), else what 1.5 heartbeat intervals tell (:data:`HEARD`)."""
    answered = await ask_orchestrators(nc)
    if answered is not None:
        replica, views = answered
        return f"orchestrator {replica}", views
    census = await take_census(nc, config)
    return HEARD, census.views(asyncio.get_running_loop().time())
