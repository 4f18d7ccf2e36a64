"""Obey the pool's control subject: ``drain`` this worker, or (drills only) ``exit`` at once."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from agent_worker.nats_link import NatsLink
from agent_worker.options import WorkerOptions
from shared import subjects
from shared.codec import ContractError, decode
from shared.control import PoolCommand

log = logging.getLogger(__name__)

HARD_EXIT_CODE = 137  # what a SIGKILL looks like to a supervisor


async def obey_forever(opts: WorkerOptions, link: NatsLink, drain: Callable[[str], None]) -> None:
    client = await link.wait_client()
    # nats-py re-subscribes after a reconnect, so one subscription serves the worker's lifetime.
    sub = await client.subscribe(subjects.pool_control(opts.pool))
    try:
        async for msg in sub.messages:
            try:
                command = decode(PoolCommand, msg.data)
            except ContractError as exc:
                log.error("ignored a malformed pool command: %s", exc)
                continue
            if command.worker is not None and command.worker != opts.worker_id:
                continue
            reason = command.reason or "pool command"
            if command.command == "drain":
                log.info("drain requested over NATS: %s", reason)
                drain(f"drain command: {reason}")
            elif opts.allow_remote_kill:
                log.critical("exit requested over NATS (%s): exiting now, as a crash would", reason)
                os._exit(HARD_EXIT_CODE)
            else:
                log.warning("refused a remote exit (%s): worker.allow_remote_kill is false", reason)
    finally:
        await sub.unsubscribe()
