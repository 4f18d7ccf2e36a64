"""One orchestrator replica: wire NATS, KV, LiveKit and the controller, run its loops, stop cleanly.

Loops (one TaskGroup, all cancelled together on SIGTERM/SIGINT; a stop in any phase, start-up
included, ends the replica within :data:`STOP_BUDGET_S` whatever NATS and LiveKit are doing):
- membership (KV bucket ``switchboard_members``) → the partitions this replica tracks;
- a KV watch per tracked partition → the room index (timers and failover of those rooms; a
  replica that dies leaves its partitions to the others within ``member_ttl_s``);
- room-event pump and status pump (shared durable pull consumers: any replica, any room);
- heartbeat subscription → pool registry, which answers `switchboard status`'s pool census;
- reservations: this replica's rooms in flight per pool out, the other replicas' in;
- sweep: deadlines, dead pools, expired leases, rooms waiting for a pool or for LiveKit;
- resync: LiveKit's room list against the records of the tracked partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry import metrics
from prometheus_client import CollectorRegistry

from orchestrator.consumer import ConsumerSpec, MessagePump
from orchestrator.index import RoomIndex
from orchestrator.jetstream_setup import open_jetstream
from orchestrator.livekit_gateway import LiveKitCallError, LiveKitGateway
from orchestrator.membership import Membership, open_members_bucket
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.other_cells import other_cells
from orchestrator.override import untrusted
from orchestrator.ownership import Ownership
from orchestrator.partition_watch import PartitionWatches
from orchestrator.pools import PoolRegistry, summary
from orchestrator.room import Reconciler
from orchestrator.room.resync import PassLog, Resync
from orchestrator.worker_presence import WorkerPresence
from shared import bus, subjects
from shared.codec import ContractError, decode, encode
from shared.config import SwitchboardConfig
from shared.control import PoolCommand
from shared.logs import Throttled
from shared.messages import (
    AgentStatus,
    Message,
    PoolCensusReply,
    PoolHeartbeat,
    ReservationsReport,
    RoomCreated,
    RoomEnded,
)
from shared.probes import ProbeServer
from shared.settings import Settings

log = logging.getLogger(__name__)


def consumers(cell: subjects.Cell) -> tuple[ConsumerSpec, ConsumerSpec]:
    """The replicas' shared durable consumers of the cell's rooms and status streams."""
    return (
        ConsumerSpec(cell.rooms_stream, subjects.ORCHESTRATOR_CONSUMER, dead_letter=cell.dead_letter),
        ConsumerSpec(cell.status_stream, subjects.ORCHESTRATOR_CONSUMER, dead_letter=cell.dead_letter),
    )


ROOMS_CONSUMER, STATUS_CONSUMER = consumers(subjects.SHARED)
# From a stop request to `run` returning: the loops' cancellation plus the NATS drain (a drain
# gets most of it; a connection that is down is closed at once).
STOP_BUDGET_S = 4.0
NATS_CLOSE_S = 3.0
# How often a replica looks whether its rooms in flight changed (and tells the others), and
# the longest it stays silent (the others drop a report older than member_ttl_s).
RESERVATIONS_EVERY_S = 0.05
RESERVATIONS_KEEPALIVE_S = 1.0


# How often a replica asks LiveKit whether it accepts its credentials (readiness, and the gate
# before it takes part).
LIVEKIT_CHECK_S = 5.0
# The exit code of a replica that stepped back because LiveKit stopped accepting its credentials.
EXIT_LIVEKIT_REJECTS = 3


class LiveKitRejectsCredentials(Exception):
    """LiveKit answered this replica's API key pair with 401/403 while it took part."""


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class Readiness:
    nats_connected: bool = False
    consumers_bound: bool = False
    index_synced: bool = False
    livekit_ok: bool = False
    details: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.nats_connected and self.consumers_bound and self.index_synced and self.livekit_ok


class OrchestratorService:
    def __init__(
        self,
        settings: Settings,
        config: SwitchboardConfig,
        replica: str | None = None,
        prometheus: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.prometheus = prometheus or CollectorRegistry()
        self.probe_port = 0
        self.metrics = OrchestratorMetrics(metrics.get_meter("switchboard.orchestrator"))
        self._mismatch_log = Throttled(log)
        self.config = config
        # The streams, buckets and subjects of this replica's rooms (its region's, with per-region state).
        self.cell = config.cell(settings.region)
        self.replica = replica or replica_id()
        self.readiness = Readiness()
        self.registry = PoolRegistry(
            config.orchestrator.heartbeat_interval_s,
            config.orchestrator.dead_after_missed_beats,
            config.pools,
            home_region=settings.region,
            region_lost_after_s=config.orchestrator.region_lost_after_s,
        )
        self.index = RoomIndex(assign_check_s=config.orchestrator.assign_check_s)
        self.ownership = Ownership(self.replica, self.index, config.orchestrator.member_ttl_s, time.monotonic)
        self._frozen = False
        # The room reconciler, once NATS and LiveKit are wired (None before and after).
        self.controller: Reconciler | None = None
        # Probes late workers' presence subjects, once NATS is connected (None before and after).
        self.presence: WorkerPresence | None = None
        self._stop = asyncio.Event()
        # Set when the replica stepped back from the work for LiveKit's refusal (see _serve).
        self.exit_code = 0

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Serve until :meth:`request_stop`; then stop within :data:`STOP_BUDGET_S`.

        The stop request cancels the work wherever it is, start-up included (a connect retrying
        against a NATS that is gone, a stream call waiting for its answer); the work's own
        ``finally`` blocks release what they hold."""
        work = asyncio.create_task(self._serve(), name="orchestrator")
        stop = asyncio.create_task(self._stop.wait(), name="stop_request")
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
                try:
                    async with asyncio.timeout(STOP_BUDGET_S):
                        await asyncio.wait({work})  # the cleanup in its finally blocks, bounded
                except TimeoutError:
                    log.warning("replica %s: clean-up took over %.0fs; leaving", self.replica, STOP_BUDGET_S)
                    work.cancel()
        if work.done() and not work.cancelled() and (failure := work.exception()) is not None:
            raise failure
        log.info("orchestrator replica %s stopped", self.replica)

    async def _serve(self) -> None:
        async def on_nats_state(state: str) -> None:
            self.readiness.nats_connected = state == "connected"
            if state == "connected" and self.presence is not None:
                self.presence.reconnected()

        nc = await bus.connect(self.settings.nats, f"switchboard-orchestrator-{self.replica}", on_nats_state)
        try:
            js = nc.jetstream()
            replicas = self.settings.nats.stream_replicas
            self.presence = WorkerPresence(
                nc, self.registry, self.config.orchestrator.heartbeat_interval_s, on_gone=self._poke_sweep
            )
            cfg = self.config.orchestrator
            cell = self.cell
            rooms_consumer, status_consumer = consumers(cell)
            handles = await open_jetstream(js, cfg, replicas, (rooms_consumer, status_consumer), cell)
            store = handles.store
            ttl_s = cfg.member_ttl_s
            membership = Membership(
                handles.members,
                nc,
                js,
                self.replica,
                ttl_s,
                self.ownership.on_members,
                reopen=lambda: open_members_bucket(js, ttl_s, replicas, cell),
                bucket=cell.members_bucket,
            )
            watches = PartitionWatches(store, self.index, self.ownership, self._on_index_synced)
            resync_kv = handles.resync
            async with LiveKitGateway(self.settings.livekit) as gateway:
                controller = Reconciler(
                    store=store,
                    gateway=gateway,
                    config=self.config,
                    registry=self.registry,
                    index=self.index,
                    replica=self.replica,
                    metrics=self.metrics,
                    ownership=self.ownership,
                    state_region=cell.region,
                )
                self.controller = controller
                self.metrics.observe_rooms(self.index.by_state)
                pools = self.registry
                self.metrics.observe_pools(lambda: pools.snapshot(time.monotonic()), controller.reserved)
                rooms = MessagePump(
                    js,
                    rooms_consumer,
                    {
                        cell.room_created: RoomCreated,
                        cell.room_manual: RoomCreated,
                        cell.room_ended: RoomEnded,
                    },
                    self._room_handler(controller),
                    on_rejected=self._count_rejected,
                )
                statuses = MessagePump(
                    js,
                    status_consumer,
                    {cell.room_status: AgentStatus, cell.room_status_wildcard: AgentStatus},
                    self._status_handler(controller),
                )
                subs = [
                    await nc.subscribe(subjects.POOL_HEARTBEAT_WILDCARD, cb=self._on_heartbeat),
                    await nc.subscribe(subjects.POOL_CONTROL_WILDCARD, cb=self._on_control),
                    await nc.subscribe(cell.reservations, cb=self._on_reservations),
                ]
                try:
                    # Learn the pools before taking rooms: without one heartbeat period of warm-up a
                    # fresh replica would park its first rooms in waiting_for_pool for nothing.
                    await asyncio.sleep(self.config.orchestrator.heartbeat_interval_s * 1.5)
                    self._warn_unserved_rules()
                    # Answer `status` only once the registry has heard the pools.
                    subs.append(
                        await nc.subscribe(
                            subjects.POOL_CENSUS, queue=subjects.ORCHESTRATOR_QUEUE, cb=self._on_census
                        )
                    )
                    log.info("orchestrator replica %s running", self.replica)
                    if self.settings.region is not None:
                        log.info(
                            "region %s: pools of other regions are judged across the NATS gateways; a "
                            "region silent as a whole is lost after %.0f s",
                            self.settings.region,
                            self.config.orchestrator.region_lost_after_s,
                        )
                    if cell.region is not None:
                        log.info(
                            "state per region: this replica works on %s's rooms (stream %s, bucket %s)",
                            cell.region,
                            cell.rooms_stream,
                            cell.rooms_bucket,
                        )
                    probes = ProbeServer(
                        self._ready, self.prometheus, self.settings.http_host, self.settings.http_port
                    )
                    try:
                        async with probes, asyncio.TaskGroup() as tg:
                            self.probe_port = probes.port
                            log.info(
                                "probes on http://%s:%d (/healthz /readyz /metrics)",
                                self.settings.http_host,
                                probes.port,
                            )
                            # A replica LiveKit refuses takes no part (no partitions, no pulls): its
                            # share of the rooms would fail, or wait, for nothing (issue 17: a bad
                            # rollout). Its probes answer meanwhile: alive, not ready.
                            await self._until_livekit_accepts(gateway)
                            tg.create_task(membership.run())
                            tg.create_task(self.presence.run())
                            tg.create_task(watches.run())
                            tg.create_task(self._share_reservations(nc))
                            tg.create_task(rooms.run())
                            tg.create_task(statuses.run())
                            tg.create_task(self._sweep(controller))
                            tg.create_task(self._check_livekit(gateway))
                            if resync_kv is not None:
                                passes = PassLog(resync_kv, self.replica)
                                others = other_cells(js, self.config, cell)
                                elsewhere = others.known if others is not None else None
                                resync = Resync(controller, gateway, passes, cell.region, elsewhere)
                                tg.create_task(resync.run(lambda: self.readiness.index_synced))
                            tg.create_task(self._track_binding(rooms, statuses))
                    except* LiveKitRejectsCredentials as group:
                        self.exit_code = EXIT_LIVEKIT_REJECTS
                        self._stop.set()
                        log.error(
                            "LiveKit now rejects this replica's API credentials (%s): stepped back (its "
                            "partitions released, nothing pulled, its rooms' claims left to lapse); exiting "
                            "with code %d so that its supervisor starts it again, to wait until LiveKit "
                            "accepts them",
                            group.exceptions[0],
                            EXIT_LIVEKIT_REJECTS,
                        )
                finally:
                    for sub in subs:
                        with contextlib.suppress(Exception):  # a closed connection has none left
                            await sub.unsubscribe()
        finally:
            self.readiness = Readiness()
            self.controller = None
            self.presence = None
            await bus.close(nc, NATS_CLOSE_S)

    # -- handlers --------------------------------------------------------------------------------

    def _room_handler(self, controller: Reconciler):  # type: ignore[no-untyped-def]
        async def handle(message: Message, msg: Msg) -> None:
            await msg.in_progress()
            if isinstance(message, RoomCreated):
                if msg.subject != self.cell.room_manual:
                    message, overridden = untrusted(message)
                    if overridden:
                        log.warning(
                            "room %s: its event on %s carries a manual-dispatch override; ignored (overrides "
                            "come only from `switchboard dispatch`, on %s)",
                            message.room,
                            msg.subject,
                            self.cell.room_manual,
                            extra={"reason": "override_ignored"},
                        )
                        self._count_rejected(msg.subject, "override_ignored")
                await controller.on_room_created(message)
            elif isinstance(message, RoomEnded):
                # When the end was published (JetStream's stamp): a sid-less end must not end a
                # newer room of the same name that started after it.
                stamp = msg.metadata.timestamp if msg.metadata is not None else None
                await controller.on_room_ended(message, stamp.timestamp() if stamp is not None else None)

        return handle

    def _poke_sweep(self) -> None:
        if self.controller is not None:
            self.controller.poke_sweep()

    def _status_handler(self, controller: Reconciler):  # type: ignore[no-untyped-def]
        async def handle(message: Message, msg: Msg) -> None:
            assert isinstance(message, AgentStatus)
            if not self._speaks_for_its_pool(msg.subject, self.cell.room_status_wildcard, message.pool):
                return
            draining = self.registry.worker_draining(message.pool, message.worker)
            await controller.on_status(message, draining)

        return handle

    def _warn_unserved_rules(self) -> None:
        """A rule whose agent no pool serves is the seed outage waiting to happen: say so at start."""
        served = {view.agent for view in self.registry.snapshot(time.monotonic())}
        for rule in self.config.rules:
            if rule.agent not in served:
                log.warning(
                    "rule %r targets agent %r, but no pool of that agent has been seen (no heartbeat, "
                    "not pinned): its rooms will wait for a pool, then fail",
                    rule.name,
                    rule.agent,
                )

    def _ready(self) -> tuple[bool, dict[str, object]]:
        r = self.readiness
        checks = {
            "nats": r.nats_connected,
            "consumers": r.consumers_bound,
            "room_index": r.index_synced,
            "livekit": r.livekit_ok,
        }
        return r.ready, {"replica": self.replica, "checks": checks, "problems": dict(r.details)}

    def _speaks_for_its_pool(self, subject: str, family: str, pool: str) -> bool:
        """Whether a heartbeat or report names the pool of its subject. NATS lets a worker publish
        on its own pool's subjects only (deploy/nats/accounts.conf), so a body naming another pool
        is a forgery or a misconfigured worker: dropped, counted and logged (issue 17). A report on
        the subject of workers from before per-pool subjects has no pool to check."""
        if subject == self.cell.room_status:
            return True
        if subjects.pool_of(subject, family) == pool:
            return True
        self._count_rejected(subject, "pool_mismatch")
        self._mismatch_log.warn(
            (subject, pool),
            "dropped a message on %s that speaks for pool %s: a worker may speak only for its own pool",
            subject,
            pool,
        )
        return False

    def _count_rejected(self, subject: str, reason: str) -> None:
        self.metrics.rejected.add(1, {"messaging.destination.name": subject, "reason": reason})

    async def _on_control(self, msg: Msg) -> None:
        try:
            command = decode(PoolCommand, msg.data)
        except ContractError as err:
            log.warning("bad pool command on %s: %s", msg.subject, err)
            return
        pool = msg.subject.split(".")[2]
        if command.command == "drain" and command.worker is None:
            # Stop scheduling onto it at once, before its workers' heartbeats say so.
            self.registry.mark_draining(pool)
            log.info("pool %s drained by operator (%s)", pool, command.reason or "no reason given")

    async def _on_census(self, msg: Msg) -> None:
        """`switchboard status` asks: the pools as this replica judges them, in one answer."""
        views = self.registry.snapshot(time.monotonic())
        try:
            answer = encode(PoolCensusReply(replica=self.replica, pools=[summary(v) for v in views]))
        except ContractError as err:  # too many pools for one message: status listens instead
            log.warning("pool census not answered: %s", err)
            return
        with contextlib.suppress(Exception):  # the asker gave up or its connection is gone
            await msg.respond(answer)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            hb = decode(PoolHeartbeat, msg.data)
        except ContractError as err:
            log.warning("bad heartbeat on %s: %s", msg.subject, err, extra={"reason": err.reason})
            return
        if not self._speaks_for_its_pool(msg.subject, subjects.POOL_HEARTBEAT_WILDCARD, hb.pool):
            return
        self.registry.observe(hb, time.monotonic())
        if self.presence is not None:
            self.presence.heard(hb.pool, hb.worker)

    # -- loops -----------------------------------------------------------------------------------

    def _on_index_synced(self, synced: bool) -> None:
        was = self.readiness.index_synced
        self.readiness.index_synced = synced
        if synced and not was:
            log.info(
                "room index synced: %d live rooms in %d of the partitions",
                len(self.index),
                len(self.ownership.owned),
            )
        if synced and not self._frozen:
            self._frozen = True
            # What exists now is the long-lived state (modules, connections, the index): out of the
            # cyclic collector's sight (gc.freeze), its full collections stop walking the index's
            # big containers (25-70 ms at 100,000 rooms, a latency spike each time one ran). The
            # entries added later are exact tuples of plain values, which it does not track.
            gc.collect()
            gc.freeze()

    async def _on_reservations(self, msg: Msg) -> None:
        try:
            report = decode(ReservationsReport, msg.data)
        except ContractError as err:
            log.warning("bad reservations report on %s: %s", msg.subject, err)
            return
        self.ownership.peers.on_report(report)

    def _complete_at(self, now: float) -> Callable[[str], bool]:
        """Whether this replica knows every job list of a pool whole, as of ``now``."""
        return lambda pool: self.registry.jobs_complete(pool, now)

    async def _share_reservations(self, nc: NATS) -> None:
        """Tell the other replicas this replica's rooms in flight whenever they change (at most
        every RESERVATIONS_EVERY_S), and every RESERVATIONS_KEEPALIVE_S regardless."""
        last: tuple[object, object] | None = None
        sent_at = 0.0
        while True:
            await asyncio.sleep(RESERVATIONS_EVERY_S)
            own = self.ownership
            if not own.joined or len(own.members) < 2:
                last = None  # alone: nobody to tell
                continue
            now = time.monotonic()
            in_flight = self.index.in_flight(self.registry.listed_jobs(now), self._complete_at(now))
            state = (in_flight, dict(own.applied))  # compared before a report is built (20 Hz)
            if state == last and now - sent_at < RESERVATIONS_KEEPALIVE_S:
                continue
            try:
                await nc.publish(self.cell.reservations, encode(own.report(in_flight)))
            except Exception as err:  # NATS away: said again once it is back
                log.debug("reservations report not sent: %r", err)
                continue
            last, sent_at = state, now

    async def _sweep(self, controller: Reconciler) -> None:
        await controller.sweep_loop(lambda: self.readiness.index_synced)

    async def _check_livekit(self, gateway: LiveKitGateway) -> None:
        """Readiness, every LIVEKIT_CHECK_S; raises LiveKitRejectsCredentials when LiveKit refuses
        the key pair (the replica then steps back: see _serve)."""
        while True:
            await asyncio.sleep(LIVEKIT_CHECK_S)  # the gate before taking part has just asked
            if (refused := await self._ask_livekit(gateway)) is not None:
                raise LiveKitRejectsCredentials(refused)

    async def _until_livekit_accepts(self, gateway: LiveKitGateway) -> None:
        """Wait, not ready and taking no part, while LiveKit refuses this replica's key pair. Any
        other answer (LiveKit down, slow) lets it take part: rooms then wait for LiveKit, visibly."""
        said = False
        while (refused := await self._ask_livekit(gateway)) is not None:
            if not said:
                log.error(
                    "LiveKit rejects this replica's API credentials (%s): taking no part (no partitions, "
                    "nothing pulled) until it accepts them; asking again every %.0fs",
                    refused,
                    LIVEKIT_CHECK_S,
                )
                said = True
            await asyncio.sleep(LIVEKIT_CHECK_S)
        if said:
            log.info("LiveKit accepts this replica's API credentials now: taking part")

    async def _ask_livekit(self, gateway: LiveKitGateway) -> str | None:
        """One credentials check into readiness; the refusal's message when LiveKit refused them."""
        try:
            await gateway.check_credentials()
        except LiveKitCallError as err:
            self.readiness.livekit_ok = False
            self.readiness.details["livekit"] = str(err)
            return str(err) if err.reason == "unauthenticated" else None
        except Exception as err:
            self.readiness.livekit_ok = False
            self.readiness.details["livekit"] = str(err)
            return None
        self.readiness.livekit_ok = True
        self.readiness.details.pop("livekit", None)
        return None

    async def _track_binding(self, *pumps: MessagePump) -> None:
        while True:
            self.readiness.consumers_bound = all(p.bound for p in pumps)
            await asyncio.sleep(0.5)


async def run_until_signalled(service: OrchestratorService) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
    await service.run()
