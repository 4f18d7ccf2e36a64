"""Which orchestrator replicas are alive, as this replica sees them.

Each replica renews a key ``m.<member>`` in KV bucket ``switchboard_members`` every third of
``member_ttl_s``, each write carrying a per-message TTL of ``member_ttl_s``; every replica
watches the bucket. A member is live while its key was written within ``member_ttl_s`` (judged
on this replica's monotonic clock from when the write arrived, so clocks need not agree); a
replica that stops cleanly deletes its key, and its partitions move at once. The TTL only keeps
the bucket from holding dead replicas for a replica that starts later.

A replica counts itself a member only once its own write came back on the watch: a replica cut
off from NATS drops out of its own view within ``member_ttl_s``, as it does from everyone else's.

A replica that crashes is known sooner than its TTL: every replica answers requests on its own
presence subject, and asks each other member's every :data:`PROBE_S`. NATS answers "no
responders" only when nobody subscribes there, which for a live member means its connection is
gone (a SIGKILL, an OOM kill, a lost host: the server drops the subscriptions at once). The
first replica to hear that deletes the member's key at the revision it saw, so every replica's
watch drops it within milliseconds, and its partitions move. A replica merely slow to answer (a
GC pause, a starved loop) still has its subscription: the probe times out, which proves nothing,
and only the TTL judges it. A member whose key was deleted while it lives (its connection came
back) writes the key again at its next renewal. Only members whose key says they answer
(``"presence": true``, written once a replica heard its own answer) are probed: a replica of an
older build, or one whose NATS user may not use the subject, is judged by the TTL alone.

The bucket is in memory, so a NATS server that restarts comes back without it: a renewal that
fails makes the bucket again, and a watch that hears nothing for ``member_ttl_s`` (not even this
replica's own renewals) starts over on the bucket as it is now (the drill that restarts NATS
found rooms nobody tracked any more: no members, no partitions, no timers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.errors import BucketNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from orchestrator.store import open_or_create_kv
from shared import subjects

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# How often each other member's presence is asked, and how long an answer is awaited.
PROBE_S = 0.25


def member_id(replica: str) -> str:
    """The replica's id as one KV key token (a host name's dots become underscores)."""
    return _UNSAFE.sub("_", replica)[:200] or "_"


async def open_members_bucket(
    js: JetStreamContext, ttl_s: float, replicas: int = 1, cell: subjects.Cell = subjects.SHARED
) -> KeyValue:
    """Bind to the members bucket, creating it (in memory: it holds only who is alive) if missing."""
    return await open_or_create_kv(
        js,
        cell.members_bucket,
        "Switchboard orchestrator replicas alive now (they divide the rooms)",
        replicas,
        storage=StorageType.MEMORY,
        limit_marker_ttl_s=max(1.0, ttl_s),
        cell=cell,
    )


async def live_members(js: JetStreamContext, cell: subjects.Cell = subjects.SHARED) -> list[str]:
    """The members whose key is in the bucket now (an operator's look: ``doctor``); none when the
    bucket does not exist yet."""
    try:
        kv = await js.key_value(cell.members_bucket)
    except BucketNotFoundError:
        return []
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    return sorted(key[2:] for key in keys if key.startswith("m."))


def _answers_probes(value: bytes) -> bool:
    try:
        return bool(json.loads(value).get("presence"))
    except (ValueError, AttributeError):
        return False


class Membership:
    def __init__(
        self,
        kv: KeyValue,
        nc: NATS,
        js: JetStreamContext,
        replica: str,
        ttl_s: float,
        on_change: Callable[[frozenset[str]], None],
        mono: Callable[[], float] = time.monotonic,
        reopen: Callable[[], Awaitable[KeyValue]] | None = None,
        bucket: str = subjects.MEMBERS_BUCKET,  # kv's name (its cell's members bucket)
    ) -> None:
        self.kv = kv
        self._reopen = reopen
        self.nc = nc
        self.js = js
        self.me = member_id(replica)
        self.ttl_s = ttl_s
        self._on_change = on_change
        self._mono = mono
        self._heard: dict[str, float] = {}
        self._revision: dict[str, int] = {}  # of each member's key, as last seen
        self._members: frozenset[str] = frozenset()
        self._subject = f"$KV.{bucket}.m.{self.me}"
        self._replica = replica
        self._payload = json.dumps({"replica": replica}).encode()
        self._probed: set[str] = set()  # members whose key says they answer presence probes
        # A clean stop's purge marker expires too: replicas come and go under new ids (a pod's
        # name, a pid).
        self._marker_ttl = max(1.0, ttl_s)

    @property
    def members(self) -> frozenset[str]:
        return self._members

    async def run(self) -> None:
        """Renew this replica's key, watch everyone's, expire the silent ones; until cancelled.
        On the way out the key is deleted, so the others take this replica's partitions now."""
        # Answering before the key is first written: a member others see always has a responder.
        presence = await self.nc.subscribe(subjects.presence(self.me), cb=self._answer)
        await self._announce_presence()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._renew())
                tg.create_task(self._watch())
                tg.create_task(self._expire())
                tg.create_task(self._probe())
        finally:
            with contextlib.suppress(Exception):
                await presence.unsubscribe()
            with contextlib.suppress(Exception):  # NATS gone: the TTL does it
                async with asyncio.timeout(1.0):
                    await self.kv.purge(f"m.{self.me}", msg_ttl=self._marker_ttl)

    async def _renew(self) -> None:
        failing = False
        while True:
            try:
                await self.js.publish(self._subject, self._payload, msg_ttl=self._marker_ttl, timeout=1.0)
                failing = False
            except Exception as err:  # NATS away: the watch drops us from our own view meanwhile
                if not failing:
                    log.warning("membership: renewing replica %s failed: %r", self.me, err)
                failing = True
                await self._ensure_bucket()
            await asyncio.sleep(self.ttl_s / 3)

    async def _ensure_bucket(self) -> None:
        """Bind to the bucket again, making it if it is gone (a restarted NATS server)."""
        if self._reopen is None or not self.nc.is_connected:
            return
        try:
            self.kv = await self._reopen()
        except Exception as err:  # JetStream not back yet: the next failure tries again
            log.debug("membership: members bucket not reopened: %r", err)

    async def _watch(self) -> None:
        while True:
            try:
                watcher = await self.kv.watch("m.>")
                try:
                    while True:
                        try:
                            entry = await watcher.updates(timeout=self.ttl_s)  # type: ignore[no-untyped-call]
                        except TimeoutError:
                            break  # not even our own renewals: watch the bucket as it is now
                        if entry is None:
                            continue
                        member = entry.key[2:]
                        if entry.operation in ("DEL", "PURGE") or not entry.value:
                            self._heard.pop(member, None)
                            self._revision.pop(member, None)
                            self._probed.discard(member)
                        else:
                            self._heard[member] = self._mono()
                            self._revision[member] = int(entry.revision or 0)
                            if _answers_probes(entry.value):
                                self._probed.add(member)
                            else:
                                self._probed.discard(member)
                        self._update()
                finally:
                    await watcher.stop()  # type: ignore[no-untyped-call]
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("membership: watch failed, restarting: %r", err)
                await self._ensure_bucket()
            await asyncio.sleep(self.ttl_s / 3)

    async def _announce_presence(self) -> None:
        """Say in the key that this replica answers probes, once it has heard its own answer: a
        replica of an older build, or one whose NATS user may not use the presence subject, is
        never probed (the others would take its silence for a lost connection), only timed out."""
        try:
            await self.nc.request(subjects.presence(self.me), b"", timeout=2.0)
        except Exception as err:
            log.warning(
                "membership: this replica cannot answer presence probes on %s (%r): the others will "
                "judge it by member_ttl_s alone (NATS permissions: see deploy/nats/accounts.conf)",
                subjects.presence(self.me),
                err,
            )
            return
        self._payload = json.dumps({"replica": self._replica, "presence": True}).encode()

    async def _answer(self, msg: Msg) -> None:
        with contextlib.suppress(Exception):  # the asker gave up, or NATS is away
            await msg.respond(b"")

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(PROBE_S)
            others = sorted(m for m in self._heard if m != self.me and m in self._probed)
            if others:
                await asyncio.gather(*(self._ask(m) for m in others))

    async def _ask(self, member: str) -> None:
        try:
            await self.nc.request(subjects.presence(member), b"", timeout=PROBE_S)
        except NoRespondersError:
            await self._gone(member)
        except Exception:  # slow to answer, or NATS away: no evidence either way; the TTL judges
            pass

    async def _gone(self, member: str) -> None:
        """``member``'s connection is gone: out of this view now, and its key deleted (at the
        revision seen, so a write it made since, having come back, stands) for everyone's."""
        revision = self._revision.get(member)
        if member not in self._heard:
            return
        del self._heard[member]
        log.info("membership: replica %s has no connection to NATS: it is gone", member)
        self._update()
        with contextlib.suppress(Exception):  # already deleted by another replica, or rewritten
            await self.kv.delete(f"m.{member}", last=revision)

    async def _expire(self) -> None:
        while True:
            self._update()
            now = self._mono()
            soonest = min(self._heard.values(), default=now) + self.ttl_s
            await asyncio.sleep(min(max(soonest - now, 0.05), self.ttl_s / 3))

    def _update(self) -> None:
        now = self._mono()
        for member in [m for m, at in self._heard.items() if now - at > self.ttl_s]:
            del self._heard[member]
        members = frozenset(self._heard)
        if members != self._members:
            self._members = members
            log.info(
                "orchestrator replicas: %d live (%s)%s",
                len(members),
                ", ".join(sorted(members)),
                "" if self.me in members else "; this replica is not among them yet",
            )
            self._on_change(members)
