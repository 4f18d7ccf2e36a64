"""What `switchboard doctor` finds out, by asking each part once (read-only, bounded in time).

Nothing here creates a stream, a consumer or a bucket: the doctor reports what is there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError, NotFoundError

from orchestrator.livekit_gateway import LiveKitGateway, classify
from orchestrator.membership import live_members
from orchestrator.ops.census import current_pools
from orchestrator.ops.doctor_checks import Facts, LiveKitProbe, OtlpProbe, consumer_streams_of, streams_of
from orchestrator.ops.session import nats_session
from orchestrator.room.resync import read_last_pass
from orchestrator.scheduler import PoolView
from shared import subjects
from shared.bus import NatsUnavailableError
from shared.config import ConfigError, SwitchboardConfig
from shared.nats_credentials import describe_auth, inspect_credentials, refused_hint
from shared.settings import LiveKitSettings, Settings

PROBE_TIMEOUT_S = 3.0


async def gather_facts(
    settings: Settings,
    config: SwitchboardConfig | None,
    env: Mapping[str, str],
    config_error: str | None = None,
) -> Facts:
    effective = config or SwitchboardConfig()
    cell = _cell(settings, effective)
    async with asyncio.TaskGroup() as tg:
        nats_task = tg.create_task(_nats_facts(settings, effective, cell))
        livekit_task = tg.create_task(probe_livekit(settings.livekit))
        otlp_task = tg.create_task(probe_otlp(env))
        # bcrypt checks take a moment each: off the loop.
        credentials_task = tg.create_task(asyncio.to_thread(inspect_credentials, settings.nats, env))
    nf = nats_task.result()
    return Facts(
        nats_url=", ".join(_redact(u) for u in settings.nats.servers),
        config_path=str(settings.config),
        config_error=config_error,
        rules=list(config.rules) if config else [],
        livekit=livekit_task.result(),
        otlp=otlp_task.result(),
        nats_error=nf.nats_error,
        jetstream_error=nf.jetstream_error,
        streams=nf.streams,
        consumers=nf.consumers,
        cell=cell,
        bucket=nf.bucket,
        pools=nf.pools,
        nats_auth=describe_auth(settings.nats),
        nats_auth_refused=refused_hint(settings.nats) if nf.auth_refused else None,
        credential_problems=credentials_task.result(),
        resync=nf.resync,
        replicas=nf.replicas,
        resync_interval_s=effective.orchestrator.resync_interval_s,
        now=time.time(),
    )


def _cell(settings: Settings, config: SwitchboardConfig) -> subjects.Cell:
    """With per-region state, the cell of this process's region, else of the default region."""
    try:
        return config.cell_or_default(settings.region)
    except ConfigError:  # a region the config does not know: the config's own check says so
        return subjects.SHARED


@dataclass
class NatsFacts:
    nats_error: str | None = None
    jetstream_error: str | None = None
    streams: dict[str, bool] = field(default_factory=dict)
    consumers: dict[str, bool] = field(default_factory=dict)
    bucket: bool | None = None
    pools: list[PoolView] | None = None
    auth_refused: bool = False
    resync: dict[str, Any] | None = None
    replicas: list[str] | None = None


async def _nats_facts(settings: Settings, config: SwitchboardConfig, cell: subjects.Cell) -> NatsFacts:
    try:
        async with nats_session(settings, "doctor", attempts=1) as nc:
            async with asyncio.TaskGroup() as tg:
                js_task = tg.create_task(_jetstream_facts(nc, cell))
                pools = tg.create_task(current_pools(nc, config))
            facts = js_task.result()
            facts.pools = pools.result()[1]
            return facts
    except NatsUnavailableError as err:
        return NatsFacts(nats_error=str(err), auth_refused="authorization violation" in str(err).lower())


async def _jetstream_facts(nc: NATS, cell: subjects.Cell) -> NatsFacts:
    js = nc.jetstream()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await js.account_info()
    except Exception as err:
        return NatsFacts(jetstream_error=f"JetStream is not available: {type(err).__name__} {err}".strip())
    streams: dict[str, bool] = {}
    for name in streams_of(cell):
        streams[name] = await _exists(js.stream_info(name))
    consumers: dict[str, bool] = {}
    for stream in consumer_streams_of(cell):
        present = streams[stream] and await _exists(js.consumer_info(stream, subjects.ORCHESTRATOR_CONSUMER))
        consumers[f"{stream}/{subjects.ORCHESTRATOR_CONSUMER}"] = present
    try:
        await js.key_value(cell.rooms_bucket)
        bucket = True
    except BucketNotFoundError:
        bucket = False
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            resync = await read_last_pass(js, cell)
    except Exception:  # not readable with these credentials, or NATS slow: shown as no pass
        resync = None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            replicas: list[str] | None = await live_members(js, cell)
    except Exception:  # not readable with these credentials, or NATS slow
        replicas = None
    return NatsFacts(streams=streams, consumers=consumers, bucket=bucket, resync=resync, replicas=replicas)


async def _exists(call: object) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await call  # type: ignore[misc]
        return True
    except NotFoundError:
        return False


async def probe_livekit(settings: LiveKitSettings) -> LiveKitProbe:
    try:
        async with LiveKitGateway(settings) as gateway:
            await gateway.check_credentials()
    except Exception as exc:
        err = classify(exc, "ListRooms")
        return LiveKitProbe(settings.url, err.reason, str(err))
    return LiveKitProbe(settings.url)


def otlp_endpoint(env: Mapping[str, str]) -> str | None:
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or env.get("OTEL_TRACES_EXPORTER") == "none":
        return None
    return env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None


async def probe_otlp(env: Mapping[str, str]) -> OtlpProbe | None:
    """A TCP connect to the configured OTLP endpoint (the exporter itself fails silently)."""
    endpoint = otlp_endpoint(env)
    if endpoint is None:
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    default_port = 443 if parts.scheme == "https" else (4317 if protocol == "grpc" else 4318)
    host = parts.hostname
    if not host:
        return OtlpProbe(endpoint, "not a URL with a host")
    try:
        port = parts.port or default_port
    except ValueError:
        return OtlpProbe(endpoint, "invalid port")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            _, writer = await asyncio.open_connection(host, port)
        writer.close()
        await writer.wait_closed()
    except TimeoutError:
        return OtlpProbe(endpoint, f"no answer from {host}:{port} within {PROBE_TIMEOUT_S:.0f}s")
    except OSError as err:
        return OtlpProbe(endpoint, f"cannot connect to {host}:{port} ({err.strerror or err})")
    return OtlpProbe(endpoint)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
