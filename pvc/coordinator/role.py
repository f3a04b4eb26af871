"""A coordinator's part in the cluster: the primary election, the switchover handoff, the
floating IP and the primary-only services. Driven by its node daemon's loop (never from a
ZooKeeper callback).

Exactly one primary: the ephemeral /primary znode, created by the daemon of the node that holds
the role (its session: a dead primary's znode goes with it, and the others elect a new one).

A switchover (`pvc node primary NODE`, pvc.coordinator.switchover) is a handoff through the
phases of HANDOFF, each advanced by whoever it names, in the seed's order:

    requested ─old─▶ services-stopped ─new─▶ ip-taken ─old─▶ released ─new─▶ primary-taken
              ─task─▶ database-moved ─new─▶ done

The old primary stops its services, the new one takes the floating IP (gratuitous ARP), the old
one waits `handoff_delay` (ARP caches settle) and lets the IP and /primary go, the new one takes
/primary, the operation records the database leader moved (it began moving it as soon as the
old primary's services stopped, in parallel with the IP's steps), the new primary starts its
services.
While a handoff is in flight only its target may take a free /primary (as long as its daemon
lives); a handoff that stops moving for HANDOFF_STALE seconds, or whose new primary's daemon
is gone before the old one let go, is abandoned and each side goes back to what it was. If the
old primary dies instead, its /primary goes with its session and the target wins the election.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable

from pvc.coordinator.floating import FloatingIP
from pvc.coordinator.services import PrimaryServices
from pvc.core import counters
from pvc.core.cluster import Cluster
from pvc.core.errors import PvcError
from pvc.core.states import CoordinatorState
from pvc.core.store import KEEP, NodeExists, NoNode, Transaction

log = logging.getLogger(__name__)
HANDOFF_STALE = 30.0


class Phase(StrEnum):
    REQUESTED = "requested"
    SERVICES_STOPPED = "services-stopped"
    IP_TAKEN = "ip-taken"
    RELEASED = "released"
    PRIMARY_TAKEN = "primary-taken"
    DATABASE_MOVED = "database-moved"
    DONE = "done"


@dataclass(frozen=True)
class Step:
    actor: str          # "old", "new" or "task"
    then: Phase


HANDOFF: dict[Phase, Step] = {
    Phase.REQUESTED: Step("old", Phase.SERVICES_STOPPED),
    Phase.SERVICES_STOPPED: Step("new", Phase.IP_TAKEN),
    Phase.IP_TAKEN: Step("old", Phase.RELEASED),
    Phase.RELEASED: Step("new", Phase.PRIMARY_TAKEN),
    Phase.PRIMARY_TAKEN: Step("task", Phase.DATABASE_MOVED),
    Phase.DATABASE_MOVED: Step("new", Phase.DONE),
}


def advance(cluster: Cluster, expected: Phase, note: str = "") -> bool:
    """Move the handoff from `expected` to its next phase (compare-and-set); False if it is
    not (or no longer) in `expected`."""
    moved = [False]

    def step(record: Any, _tx: Transaction) -> Any:
        if not record or record.get("phase") != expected:
            return KEEP
        nxt = HANDOFF[expected].then
        record["phase"] = nxt
        record["changed"] = time.time()
        record.setdefault("history", []).append([time.time(), nxt, note])
        moved[0] = True
        return record

    try:
        cluster.store.update(cluster.schema.handoff, step)
    except NoNode:
        return False
    return moved[0]


class CoordinatorRole:
    def __init__(self, cluster: Cluster, name: str, services: PrimaryServices,
                 floating: FloatingIP | None, set_state: Callable[[str], None],
                 handoff_delay: float, alive: Callable[[str], bool],
                 on_primary: Callable[[], None] = lambda: None,
                 suspend_grace: float = 0.0) -> None:
        self.cluster = cluster
        self.name = name
        self.services = services
        self.floating = floating
        self.set_state = set_state
        self.handoff_delay = handoff_delay
        self.alive = alive                 # is a node's daemon alive?
        self.on_primary = on_primary       # called when this node became the primary
        self.is_primary = False
        # Cut off from ZooKeeper (session suspended): this node cannot know whether it is
        # still the primary, so it holds nothing a primary holds until the session is back.
        self.cut_off = False
        self._expired = False
        self._lock = threading.Lock()
        # How long a suspended session may come back before the primary lets go: kazoo says
        # "suspended" about 2/3 of the session timeout after the last word from ZooKeeper,
        # which expires the session at the full timeout; a third of it more lets a client
        # move to another member of the ensemble without a flap, and lets go no later than
        # the moment another coordinator could be elected.
        self.suspend_grace = suspend_grace
        self._letting_go: threading.Timer | None = None

    def forget_stale(self) -> None:
        """At a daemon's start: a /primary in this node's name is an earlier process's (its
        session has not expired yet); let it go now rather than serve on a dead session. The
        floating IP an earlier process left here goes too (the election takes it again)."""
        if self.holder() == self.name:
            try:
                self.cluster.store.delete(self.cluster.schema.primary)
            except NoNode:
                pass
        if self.floating is not None:
            self.floating.release()

    # ------------------------------------------------------------------ ZooKeeper's word
    def suspended(self) -> None:
        """The session is suspended (on the store's session thread, never blocked by
        ZooKeeper): another coordinator may win the role as soon as the session expires on
        the ensemble's side, which this node cannot see. Unless the session is back within
        the grace, a primary lets go of what must never be held twice (let_go)."""
        with self._lock:
            if not self.is_primary or self.cut_off or self._letting_go is not None:
                return
            if self.suspend_grace <= 0:
                self._letting_go = None
            else:
                self._letting_go = threading.Timer(self.suspend_grace, self.let_go)
                self._letting_go.daemon = True
                self._letting_go.start()
                return
        self.let_go()

    def let_go(self) -> None:
        """Cut off: the floating IP first, then the primary's services. No ZooKeeper call
        here: there is none to be had."""
        with self._lock:
            self._letting_go = None
            if not self.is_primary or self.cut_off:
                return
            self.cut_off = True
            if self.floating is not None:
                self.floating.release()
        log.warning("%s: cut off from ZooKeeper: floating IP released, primary services "
                    "stopping until the session is back", self.name)
        self.services.stop_all()

    def _cancel_letting_go(self) -> None:
        if self._letting_go is not None:
            self._letting_go.cancel()
            self._letting_go = None

    def reconnected(self) -> None:
        """Back on the same session: the role (its ephemeral znode) was never lost; if it
        let go, the loop's next step takes the IP again (announced) and starts the
        services."""
        with self._lock:
            self._cancel_letting_go()
            self.cut_off = False

    def expired(self) -> None:
        """The session is gone, and with it the role: let go now if the grace has not run
        out yet; the loop's next step makes this node a secondary; it never takes the IP
        again without winning the role anew."""
        with self._lock:
            self._cancel_letting_go()
        self.let_go()
        with self._lock:
            self.cut_off = False
            self._expired = self._expired or self.is_primary
            self.is_primary = False

    def _take_floating_ip(self, announce: bool = False) -> None:
        with self._lock:
            if self.floating is not None and not self.cut_off:
                self.floating.take(announce=announce)

    # ------------------------------------------------------------------ reading
    def holder(self) -> str | None:
        return self.cluster.store.get_text(self.cluster.schema.primary)

    def handoff(self) -> dict[str, Any] | None:
        return self.cluster.store.get_json(self.cluster.schema.handoff, None)

    # ------------------------------------------------------------------ the loop's entry
    def step(self) -> None:
        """Everything this coordinator must do now: its part of a handoff, the election when
        the role is free, keeping the primary's floating IP."""
        if self.cut_off:
            return   # nothing is certain until the session is back
        if self._expired:
            self._expired = False
            self._become_secondary()
        record = self.handoff()
        if record:
            self._handoff(record)
        holder = self.holder()
        if holder is None:
            self._elect(record)
        elif holder == self.name:
            if not self.is_primary:       # e.g. a restarted daemon found its own znode
                self._become_primary(record, by_election=True)
            elif not self._in_handoff(record, "old"):
                self._serve(record)
        elif self.is_primary:             # it went elsewhere without a handoff (session)
            self._become_secondary()

    def _serve(self, record: dict[str, Any] | None) -> None:
        """The primary keeps its floating IP, and once no handoff is in flight its services
        run (again, after a handoff that was abandoned once they had stopped)."""
        self._take_floating_ip()          # idempotent (announced when it was added)
        if record is None and not self.services.active:
            self._start_services()

    # ------------------------------------------------------------------ election
    def _elect(self, record: dict[str, Any] | None) -> None:
        target = record.get("to") if record else None
        if target and target != self.name and self.alive(target):
            return   # a handoff to a living node: the role is its to take
        try:
            self.cluster.store.create(self.cluster.schema.primary, self.name, ephemeral=True)
        except NodeExists:
            return
        log.info("%s won the primary election", self.name)
        counters.count(self.cluster, "elections", {"node": self.name})
        self._become_primary(record, by_election=True)

    def _become_primary(self, record: dict[str, Any] | None, by_election: bool) -> None:
        self.set_state(CoordinatorState.TAKEOVER)
        self._take_floating_ip(announce=True)   # even if held: ARP caches may point elsewhere
        self.is_primary = True
        if record and record.get("to") == self.name and by_election and \
                self._join_handoff(record):
            return   # the operation goes on with the database step; services start after it
        failed = self.services.start_all()
        if failed:
            log.warning("primary services that did not start: %s", "; ".join(failed))
        self.set_state(CoordinatorState.PRIMARY)
        self.on_primary()

    def _join_handoff(self, record: dict[str, Any]) -> bool:
        """An election won in the middle of a handoff to this node (the old primary died):
        skip the old side's steps. False if the handoff is gone meanwhile."""
        for phase in (Phase.REQUESTED, Phase.SERVICES_STOPPED, Phase.IP_TAKEN):
            advance(self.cluster, phase, f"{self.name} won the election")
        current = self.handoff()
        return current is not None and current.get("op") == record.get("op")

    def _become_secondary(self) -> None:
        self.services.stop_all()
        if self.floating is not None:
            self.floating.release()
        self.is_primary = False
        self.set_state(CoordinatorState.SECONDARY)

    # ------------------------------------------------------------------ handoff
    def _in_handoff(self, record: dict[str, Any] | None, side: str) -> bool:
        if not record:
            return False
        return record.get("from" if side == "old" else "to") == self.name

    def _handoff(self, record: dict[str, Any]) -> None:
        phase = Phase(record["phase"])
        if phase == Phase.DONE:
            return
        side = "old" if record.get("from") == self.name else \
            "new" if record.get("to") == self.name else ""
        if not side:
            return
        if phase in BEFORE_RELEASE and self._stalled(record, side):
            self._abandon(record, side)
            return
        step = HANDOFF.get(phase)
        if step is None or step.actor != side:
            return
        try:
            ACTIONS[(side, phase)](self)
        except PvcError as e:
            log.warning("switchover step %s (%s) failed: %s", phase, side, e)
            return
        advance(self.cluster, phase, f"{self.name}: {HANDOFF[phase].then}")

    def _stalled(self, record: dict[str, Any], side: str) -> bool:
        """The handoff stopped moving, or (seen from the old primary) the new one's daemon is
        gone: waiting longer would leave the cluster without a serving primary."""
        if time.time() - float(record.get("changed", 0)) > HANDOFF_STALE:
            return True
        return side == "old" and not self.alive(str(record.get("to")))

    def _stop_services(self) -> None:
        self.set_state(CoordinatorState.RELINQUISH)
        self.services.stop_all()

    def _take_ip(self) -> None:
        self.set_state(CoordinatorState.TAKEOVER)
        self._take_floating_ip(announce=True)

    def _release(self) -> None:
        time.sleep(self.handoff_delay)   # the seed's rule: neighbours' ARP caches settle
        if self.floating is not None:
            self.floating.release()
        self.is_primary = False
        try:
            self.cluster.store.delete(self.cluster.schema.primary)
        except NoNode:
            pass
        self.set_state(CoordinatorState.SECONDARY)

    def _take_primary(self) -> None:
        try:
            self.cluster.store.create(self.cluster.schema.primary, self.name, ephemeral=True)
        except NodeExists:
            if self.holder() != self.name:
                raise PvcError("the primary role was taken by another node meanwhile")
        self.is_primary = True

    def _start_services(self) -> None:
        failed = self.services.start_all()
        if failed:
            log.warning("primary services that did not start: %s", "; ".join(failed))
        self.set_state(CoordinatorState.PRIMARY)

    def _abandon(self, record: dict[str, Any], side: str) -> None:
        """The handoff stopped moving (its operation or the other side died): go back."""
        log.warning("switchover %s stalled at %s; going back", record.get("op"),
                    record.get("phase"))
        try:
            self.cluster.store.delete(self.cluster.schema.handoff)
        except NoNode:
            pass
        self.after_abandon(side)

    def after_abandon(self, side: str) -> None:
        if self.holder() == self.name:          # still the primary: serve again
            self.is_primary = False
            self._become_primary(None, by_election=False)
        elif side == "new" and self.floating is not None:
            self.floating.release()
            self.set_state(CoordinatorState.SECONDARY)


# Until the old primary has let go, the handoff can be abandoned and each side go back.
BEFORE_RELEASE = (Phase.REQUESTED, Phase.SERVICES_STOPPED, Phase.IP_TAKEN)

ACTIONS: dict[tuple[str, Phase], Callable[[CoordinatorRole], None]] = {
    ("old", Phase.REQUESTED): CoordinatorRole._stop_services,
    ("new", Phase.SERVICES_STOPPED): CoordinatorRole._take_ip,
    ("old", Phase.IP_TAKEN): CoordinatorRole._release,
    ("new", Phase.RELEASED): CoordinatorRole._take_primary,
    ("new", Phase.DATABASE_MOVED): CoordinatorRole._start_services,
}
