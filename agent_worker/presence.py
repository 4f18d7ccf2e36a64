"""Answer the orchestrators' presence probes on ``switchboard.pools.<pool>.presence.<worker>``.

While this process's NATS connection lives, NATS delivers a probe here and the answer is empty.
Once the process is gone (killed, crashed, its host down) NATS itself answers "no responders",
which lets the orchestrator declare the worker dead a beat after its silence began instead of
after ``dead_after_missed_beats`` beats. A worker that is alive but frozen (a GC pause, SIGSTOP)
keeps its subscription: the probe only times out, and the beats alone judge it, as before.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg

from agent_worker.nats_link import NatsLink
from agent_worker.options import WorkerOptions
from shared import subjects

log = logging.getLogger(__name__)


async def answer_presence(opts: WorkerOptions, link: NatsLink) -> None:
    subject = subjects.worker_presence(opts.pool, opts.worker_id)
    if subject is None:
        log.warning("worker id %r is not one NATS subject token: judged by its beats alone", opts.worker_id)
        return
    client = await link.wait_client()

    async def answer(msg: Msg) -> None:
        if msg.reply:
            await msg.respond(b"")

    # nats-py re-subscribes after a reconnect, so one subscription serves the worker's lifetime;
    # the runtime cancels this task with the others, and closing the connection ends the interest.
    await client.subscribe(subject, cb=answer)
    log.debug("answering presence probes on %s", subject)
