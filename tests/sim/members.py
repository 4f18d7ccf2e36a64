"""Membership, simulated: the ``switchboard_members`` bucket and every replica's view of it — what
``orchestrator.membership.Membership`` computes in each replica, reproduced event by event (the
real class renews and re-reads its key every second; run as is, it doubled a seed's cost).

As in production:

* a replica starts its membership once its warm-up is over; it renews its key every
  ``member_ttl_s / 3`` (each renewal lands at once and reaches every watching replica, the renewer
  included, after a seeded lag ``NOTIFY_LAG_S``); a replica counts itself a member only once its
  own renewal came back;
* a starting replica's watch first reads the keys the bucket holds (a crashed replica's key too,
  until its TTL runs out);
* a replica not heard from for ``member_ttl_s`` leaves a view: a crashed one ``member_ttl_s``
  after its last renewal arrived; during a KV outage every renewal fails (the publish times out
  after 1 s, then the loop sleeps as usual), so every replica drops out of every view, its own
  included, until renewals land again;
* a replica stopped cleanly deletes its key (unless KV is down): it leaves every view when the
  delete arrives;
* a crashed replica's connection is gone, so the other members' presence probes hear "no
  responders" within ``PROBE_S``: the first to hear it (if any member is left, and KV answers)
  deletes the key, and it leaves every view when that delete arrives, before its TTL.

Each view change calls the replica's ``Ownership.on_members`` (through ``Replica.on_members``).
None of this is ``World.pending`` (renewals never stop); the end check judges the views.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from orchestrator.membership import PROBE_S, member_id
from tests.sim.config import NOTIFY_LAG_S

if TYPE_CHECKING:
    from tests.sim.replica import Replica
    from tests.sim.world import World

# Membership._renew: a publish gives up after this (then sleeps ttl/3 as after a success).
PUBLISH_TIMEOUT_S = 1.0


class View:
    """One replica's view: when it last heard each member (an arrival may still be on its way)."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.heard: dict[str, float] = {}
        self.members: frozenset[str] = frozenset()
        self.adding: set[str] = set()  # members whose first arrival is on its way


class Members:
    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.ttl = world.config.orchestrator.member_ttl_s
        self.keys: dict[str, float] = {}  # member -> when its last renewal landed
        self.views: dict[str, View] = {}  # member -> its own view (while it runs its membership)

    def lag(self) -> float:
        return self.rng.uniform(*NOTIFY_LAG_S)

    # -- a replica's membership ----------------------------------------------------------------------

    def join(self, replica: Replica) -> None:
        """``Membership.run`` starts: the watch reads the bucket, the first renewal goes out."""
        me = member_id(replica.name)
        view = self.views[me] = View(replica)
        now = self.world.loop.time()
        for member, put in self.keys.items():
            if put + self.ttl > now:
                # Its key's TTL still runs: heard as of its last renewal (the server's marker
                # removes it when that runs out, renewed or not by then).
                self._arrive(view, member, put + self.lag(), now + self.lag())
        self._renew(replica, me)

    def crash(self, replica: Replica) -> None:
        """Its connection is gone: no more renewals (each view drops it ``member_ttl_s`` after the
        last one arrived), its key stays until the TTL."""
        me = member_id(replica.name)
        self.views.pop(me, None)
        self._expire_later(me)
        self.world.loop.call_later(self.rng.uniform(0.0, PROBE_S) + self.lag(), self._probed_gone, me)

    def _probed_gone(self, member: str) -> None:
        """A live member's probe of the crashed ``member`` got "no responders": it deletes the key
        (as of the renewal it saw: one landed since would make the delete fail)."""
        faults = self.world.faults
        kv_down = faults.kv_down and not faults.healed
        if self.world.stopped or member not in self.keys or not self.views or kv_down:
            return  # nobody left to probe, or the delete times out: the TTL does it
        del self.keys[member]
        for view in self.views.values():
            self.world.loop.call_later(self.lag(), self._deleted, view, member)

    def stop(self, replica: Replica) -> None:
        """A clean stop: the key is deleted on the way out (if KV answers)."""
        me = member_id(replica.name)
        self.views.pop(me, None)
        faults = self.world.faults
        if me not in self.keys or (faults.kv_down and not faults.healed):
            self._expire_later(me)  # the delete times out: left to the TTL, as a crash
            return
        del self.keys[me]
        for view in self.views.values():
            self.world.loop.call_later(self.lag(), self._deleted, view, me)

    # -- the events -----------------------------------------------------------------------------------

    def _renew(self, replica: Replica, me: str) -> None:
        world = self.world
        if world.stopped or not replica.alive:
            return
        faults = world.faults
        now = world.loop.time()
        if faults.kv_down and not faults.healed:
            # Times out; the watchers hear nothing, so everyone drops this member after the TTL.
            self._expire_later(me)
            world.loop.call_later(PUBLISH_TIMEOUT_S + self.ttl / 3, self._renew, replica, me)
            return
        self.keys[me] = now
        for view in self.views.values():
            self._arrive(view, me, now + self.lag())
        # The publish's round trip, then the loop's sleep.
        world.loop.call_later(self.rng.uniform(0.001, 0.006) + self.ttl / 3, self._renew, replica, me)

    def _arrive(self, view: View, member: str, heard: float, shown: float | None = None) -> None:
        """A renewal of ``member`` reaches ``view`` at ``heard`` (it joins the view at ``shown``,
        if later: a starting replica reads the keys when its watch starts)."""
        if heard > view.heard.get(member, -math.inf):
            view.heard[member] = heard
        if member not in view.members and member not in view.adding:
            view.adding.add(member)
            self.world.loop.call_at(max(heard, shown or heard), self._added, view, member)

    def _added(self, view: View, member: str) -> None:
        view.adding.discard(member)
        if not self._watching(view) or member in view.members:
            return
        heard = view.heard.get(member)
        now = self.world.loop.time()
        if heard is None or heard + self.ttl <= now:
            return
        self._change(view, view.members | {member})
        self.world.loop.call_at(heard + self.ttl, self._check, view, member)

    def _expire_later(self, member: str) -> None:
        """``member`` renews no more, for now (a crash, a failed renewal): each view looks again
        when the last renewal it heard runs out (renewals that keep arriving need no look)."""
        now = self.world.loop.time()
        for view in self.views.values():
            heard = view.heard.get(member)
            if heard is not None and member in view.members | view.adding:
                self.world.loop.call_at(max(heard + self.ttl, now), self._check, view, member)

    def _check(self, view: View, member: str) -> None:
        """Whether ``view`` still hears ``member`` (``member_ttl_s`` since the last renewal that
        reached it); renewed meanwhile, it stays (a later stop schedules another look)."""
        if not self._watching(view) or member not in view.members:
            return
        heard = view.heard.get(member)
        if heard is not None and heard + self.ttl > self.world.loop.time():
            return
        view.heard.pop(member, None)
        self._change(view, view.members - {member})

    def _deleted(self, view: View, member: str) -> None:
        if not self._watching(view):
            return
        view.heard.pop(member, None)
        if member in view.members:
            self._change(view, view.members - {member})

    def _watching(self, view: View) -> bool:
        me = member_id(view.replica.name)
        return not self.world.stopped and self.views.get(me) is view

    def _change(self, view: View, members: frozenset[str]) -> None:
        view.members = members
        view.replica.on_members(members)
