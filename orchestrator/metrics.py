"""The orchestrator's OpenTelemetry instruments, made from a meter passed in (no module globals).

Histograms (seconds): room event → dispatched, → joined, → voice; CreateDispatch latency.
Counters: dispatch outcomes, retries, redispatches by cause, rejected messages by reason.
Gauges per pool: load, headroom, reserved, liveness — read from the registry and room index.
Gauge per state: live rooms (every replica sees every room today: aggregate with max, not sum).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from orchestrator.scheduler import PoolView

_LIVENESS = {"alive": 1.0, "draining": 0.5, "dead": 0.0}


class OrchestratorMetrics:
    def __init__(self, meter: Meter) -> None:
        self.time_to_dispatch = meter.create_histogram(
            "switchboard.room.time_to_dispatch",
            unit="s",
            description="Room event received -> dispatch created",
        )
        self.time_to_joined = meter.create_histogram(
            "switchboard.room.time_to_joined", unit="s", description="Room event received -> agent joined"
        )
        self.time_to_voice = meter.create_histogram(
            "switchboard.room.time_to_voice", unit="s", description="Room event received -> agent heard"
        )
        self.create_dispatch_duration = meter.create_histogram(
            "switchboard.livekit.create_dispatch.duration", unit="s", description="One CreateDispatch call"
        )
        self.dispatches = meter.create_counter(
            "switchboard.dispatches", description="Dispatch steps by outcome (ok, failed, retry_later)"
        )
        self.retries = meter.create_counter(
            "switchboard.dispatch.retries", description="CreateDispatch retries"
        )
        self.redispatches = meter.create_counter(
            "switchboard.redispatches", description="Redispatches by cause"
        )
        self.rejected = meter.create_counter(
            "switchboard.messages.rejected", description="Messages dead-lettered, by subject and reason"
        )
        self.resync_passes = meter.create_counter(
            "switchboard.resync.passes",
            description="Resync passes (LiveKit's rooms against the records), by outcome",
        )
        self.resync_rooms = meter.create_counter(
            "switchboard.resync.rooms",
            description="Rooms the resync acted on: found (no event had arrived), ended, agent_lost",
        )
        self.resync_duration = meter.create_histogram(
            "switchboard.resync.pass.duration", unit="s", description="One resync pass, ListRooms included"
        )
        self._meter = meter

    def observe_pools(
        self,
        pools: Callable[[], Iterable[PoolView]],
        reserved: Callable[[Iterable[PoolView]], Mapping[str, int]],
    ) -> None:
        """Register the per-pool gauges; the callbacks read the live registry at collection time."""

        def snapshot() -> tuple[list[PoolView], Mapping[str, int]]:
            views = list(pools())
            return views, reserved(views)

        def load(_: CallbackOptions) -> Iterable[Observation]:
            views, _r = snapshot()
            return [Observation(v.load, _attrs(v)) for v in views]

        def headroom(_: CallbackOptions) -> Iterable[Observation]:
            views, res = snapshot()
            return [Observation(max(0, v.capacity - v.active - res.get(v.pool, 0)), _attrs(v)) for v in views]

        def reservations(_: CallbackOptions) -> Iterable[Observation]:
            views, res = snapshot()
            return [Observation(res.get(v.pool, 0), _attrs(v)) for v in views]

        def liveness(_: CallbackOptions) -> Iterable[Observation]:
            views, _r = snapshot()
            return [Observation(_LIVENESS.get(v.liveness, 0.0), _attrs(v)) for v in views]

        self._meter.create_observable_gauge("switchboard.pool.load", [load], description="active / capacity")
        self._meter.create_observable_gauge("switchboard.pool.headroom", [headroom], unit="{job}")
        self._meter.create_observable_gauge("switchboard.pool.reserved", [reservations], unit="{job}")
        self._meter.create_observable_gauge(
            "switchboard.pool.liveness", [liveness], description="1 alive, 0.5 draining, 0 dead"
        )

    def observe_rooms(self, by_state: Callable[[], Mapping[str, int]]) -> None:
        """Register the live-rooms gauge (``switchboard_rooms_live{switchboard_state}``), read from
        the room index at collection time."""

        def live(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(n, {"switchboard.state": state}) for state, n in by_state().items()]

        self._meter.create_observable_gauge(
            "switchboard.rooms.live",
            [live],
            unit="{room}",
            description="Live rooms by state, as this replica's room index sees them",
        )


def _attrs(view: PoolView) -> dict[str, str]:
    return {"switchboard.pool": view.pool, "switchboard.region": view.region, "switchboard.agent": view.agent}
