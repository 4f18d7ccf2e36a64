"""JetStream, simulated: room events and status reports, each handled by one live replica.

As the real consumers (orchestrator/consumer.py, whose spec and classification are used as they
are): a message goes to one replica (a shared durable pull consumer); handled without error, it is
acked; a handler error naks it and it comes back after the consumer's backoff, to any replica — for
as long as it takes when the failure is transient (``is_transient``), else it is dead-lettered (lost
to the controller) after ``poison_after`` deliveries; a replica crashing mid-handler has it
redelivered once the ack wait runs out (a live replica keeps its messages with in_progress, so
there is no redelivery while it works). Faults: a message delayed (which reorders it against
others), an ack lost (the message comes again).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.consumer import is_transient
from shared.messages import AgentStatus, RoomCreated, RoomEnded
from tests.sim.config import ACK_WAIT_S, CONSUMER, MSG_DELAY_MAX_S, nak_delay

if TYPE_CHECKING:
    from tests.sim.replica import Replica
    from tests.sim.world import World

Message = RoomCreated | RoomEnded | AgentStatus


@dataclass(eq=False, slots=True)
class Envelope:
    id: int
    msg: Message
    published_at: float  # unix seconds: JetStream's stamp (when the stream stored it)
    deliveries: int = 0

    @property
    def label(self) -> str:
        m = self.msg
        if isinstance(m, AgentStatus):
            return f"AgentStatus {m.room} {m.state} {m.dispatch_id}"
        return f"{type(m).__name__} {m.room} {m.sid or '(no sid)'}"


# A scripted scenario may choose the replica: (envelope, ready replicas, world) -> one of them.
Router = Callable[[Envelope, "list[Replica]", "World"], "Replica | None"]


class Delivery:
    def __init__(self, world: World, router: Router | None = None) -> None:
        self.world = world
        self.router = router
        self._ids = 0
        self.dead: list[Envelope] = []
        self.delivered_rooms: set[str] = set()  # rooms whose RoomCreated reached a replica

    def publish(self, msg: Message) -> None:
        self._ids += 1
        env = Envelope(self._ids, msg, self.world.wall())
        rng = self.world.faults.msg
        delay = rng.uniform(0.002, 0.03)
        if not self.world.faults.healed and rng.random() < self.world.faults.mix.msg_delay:
            delay = rng.uniform(0.1, MSG_DELAY_MAX_S)
        self.world.log("nats", f"publish #{env.id} {env.label}")
        self.world.later(delay, lambda: self._deliver(env))

    def _deliver(self, env: Envelope) -> None:
        world = self.world
        ready = world.ready_replicas()
        if not ready:
            world.later(0.5, lambda: self._deliver(env))  # no consumer bound: it waits in the stream
            return
        replica = self.router(env, ready, world) if self.router else None
        if replica is None:
            replica = ready[world.faults.msg.randrange(len(ready))]
        env.deliveries += 1
        if isinstance(env.msg, RoomCreated):
            self.delivered_rooms.add(env.msg.room)
        world.pending += 1
        world.log(replica.name, f"deliver #{env.id} {env.label} (delivery {env.deliveries})")
        task = replica.handle(env, env.label)
        task.add_done_callback(lambda t: self._settle(env, replica, t))

    def _settle(self, env: Envelope, replica: Replica, task: asyncio.Task[Any]) -> None:
        world = self.world
        world.pending -= 1
        if world.stopped:
            return
        if task.cancelled():
            world.log("nats", f"#{env.id} unacked ({replica.name} died): redelivered after the ack wait")
            world.later(ACK_WAIT_S, lambda: self._deliver(env))
            return
        exc = task.exception()
        if exc is not None:
            world.checks.on_exception(replica.name, env.label, exc)
            if not is_transient(exc) and env.deliveries >= CONSUMER.poison_after:
                world.log("nats", f"#{env.id} DEAD-LETTERED after {env.deliveries} failed deliveries")
                self.dead.append(env)
                return
            delay = nak_delay(env.deliveries)
            world.log(replica.name, f"nak #{env.id}: redelivery in {delay:g}s")
            world.later(delay, lambda: self._deliver(env))
            return
        rng = world.faults.msg
        if not world.faults.healed and rng.random() < world.faults.mix.msg_dup:
            world.log("nats", f"#{env.id} ack lost (FAULT): delivered again after the ack wait")
            world.later(ACK_WAIT_S, lambda: self._deliver(env))
        else:
            world.log(replica.name, f"ack #{env.id}")
