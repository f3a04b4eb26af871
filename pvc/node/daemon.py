"""The node daemon: registers the node, reconciles it, keeps it alive and published.

    init ──register──▶ reconcile ──▶ run ──SIGTERM──▶ stop
                                      │
                   session expired and renewed: liveness re-created, reconcile again at once

Liveness is an ephemeral znode owned by the daemon's ZooKeeper session: when the daemon dies,
the session expires, the znode goes, and every other node sees the daemon as dead.
The loop wakes on its keepalive timer, on libvirt lifecycle events (to publish running domains
at once, and to restart a VM that should run and died), on a renewed ZooKeeper session and on a
change of the primary coordinator.

Drift policy: a VM that should run here and does not (it crashed, or was destroyed behind
pvc's back) is started again, at most `restart_limit` times within `restart_window` seconds;
then it is left stopped with the reason in its record until an operator starts it. A domain
running here that pvc does not know is published (and shown as unknown), never touched.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from pvc.coordinator.floating import FloatingIP
from pvc.coordinator.role import CoordinatorRole
from pvc.coordinator.services import PrimaryServices
from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.core.errors import PvcError
from pvc.core.models import VM
from pvc.core.states import CoordinatorState, DaemonState, DomainState, FenceState
from pvc.core.store import NodeExists, NoNode, SessionEvent
from pvc.node import reconcile, service_checks
from pvc.node.context import NodeContext
from pvc.node.dns import DnsAggregator
from pvc.node.gateways import Gateways
from pvc.node.ipmi import BmcAddress, IpmiBmc
from pvc.node.networks import NodeNetworks
from pvc.node.vmstats import StatsPublisher
from pvc.operations import records, sweep
from pvc.storage import manage
from pvc.vm import disks
from pvc.vm.lifecycle import record_failure

log = logging.getLogger(__name__)
RETRY_AFTER_FAILURE = 0.5   # seconds before a failed keepalive is tried again

# What the coordinator role does when ZooKeeper's session changes (on the session thread).
ROLE_ON_SESSION: dict[SessionEvent, Callable[[CoordinatorRole], None]] = {
    SessionEvent.SUSPENDED: CoordinatorRole.suspended,
    SessionEvent.RECONNECTED: CoordinatorRole.reconnected,
    SessionEvent.EXPIRED: CoordinatorRole.expired,
}


MAINTENANCE_HOLD = "the cluster is in maintenance (nothing starts on its own)"

class NodeDaemon:
    def __init__(self, config: Config, context: NodeContext | None = None) -> None:
        self.config = config
        self.name = config.node.name
        self.ctx: NodeContext | None = context
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._domains_dirty = threading.Event()
        self.coordinator = self.name in config.cluster.coordinators
        self.last_reconcile: reconcile.Result | None = None
        self._drift = threading.Event()            # a domain stopped: check what should run
        self._renewed = threading.Event()          # a new ZooKeeper session: resync
        self._drift_seen: dict[str, dict[str, Any]] = {}
        self.restarts = CrashLoopGuard(config.node.restart_limit, config.node.restart_window)
        # primary-only housekeeping, in order: each returns what it did as a sentence
        self.duties: list[Callable[[Cluster], str]] = [self._prune, sweep.stale_claims]
        self.services = PrimaryServices()          # primary-only services register here
        self.role: CoordinatorRole | None = None
        self.networks: NodeNetworks | None = None  # with enable_networking
        self.gateways: Gateways | None = None      # primary-only, on coordinators
        self._services_seen: dict[str, str] | None = None
        self._said = ""      # the last loop's sentence
        self.aggregator: DnsAggregator | None = None   # primary-only, with cluster.dns
        self._networks_dirty = threading.Event()   # managed networks or nodes changed
        self.stats: StatsPublisher | None = None   # with enable_hypervisor

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        self.ctx = ctx = self.ctx or NodeContext(self.config)
        self._put("daemon_state", DaemonState.INIT)
        if self.coordinator:
            self.role = CoordinatorRole(
                ctx.cluster, self.name, self.services, FloatingIP.of(self.config),
                lambda state: self._put("coordinator_state", state),
                self.config.cluster.handoff_delay, self._alive,
                suspend_grace=self.config.cluster.zookeeper.session_timeout / 3)
            self.role.forget_stale()   # before this process counts as the node's daemon
        self._put("coordinator_state", CoordinatorState.SECONDARY if self.coordinator
                  else CoordinatorState.CLIENT)
        self._register()
        if self.config.node.enable_networking:   # bridges before the VMs that use them
            self.networks = NodeNetworks(ctx.cluster, self.config)
            self._build_networks()
            if self.coordinator:
                self.gateways = Gateways(ctx.cluster, self.config)
                self.gateways.forget_stale()
                self.services.register(self.gateways)
                if self.config.cluster.dns.enabled:   # after the gateways it reads from
                    self.aggregator = DnsAggregator(ctx.cluster, self.config)
                    self.services.register(self.aggregator)
            for path in (ctx.schema.networks, ctx.schema.nodes):
                ctx.store.watch_children(path, lambda _kids: self._nudge(self._networks_dirty))
        if self.config.node.enable_hypervisor:
            if self.config.node.enable_storage:   # before any VM opens its disks
                disks.give_key_to_hypervisor(ctx.hv, self.config.cluster.storage)
            ctx.hv.on_lifecycle(self._on_domain_event)
            # a daemon (re)started in maintenance starts nothing on its own either
            held = ctx.cluster.maintenance() is not None
            self.last_reconcile = reconcile.reconcile(
                ctx, (lambda _vm: MAINTENANCE_HOLD) if held else None)
            log.info(self.last_reconcile.sentence())
        else:
            log.info("hypervisor disabled on %s: runs no VMs, never a target", self.name)
        if ctx.store.get_text(ctx.schema.node_field(self.name, "domain_state")) is None:
            self._put("domain_state", DomainState.READY)
        self._put("daemon_state", DaemonState.RUN)
        if self.config.node.enable_hypervisor:   # maintenance off: what it held, at once
            ctx.store.watch_raw(ctx.schema.maintenance, lambda _d, _v: self.reconcile_soon())
        if self.role is not None:
            for path in (ctx.schema.primary, ctx.schema.handoff):
                ctx.store.watch_raw(path, lambda _d, _v: self._wake.set())
        self._tick(publish=False)   # the reconcile just published domains and resources
        if self.config.node.enable_hypervisor:
            m = self.config.cluster.metrics
            self.stats = StatsPublisher(ctx.hv.domain_stats,
                                        lambda record: self._put_json("vm_stats", record),
                                        m.stats_interval, m.stats_rate)
            self.stats.start()
        ctx.store.on_session(self._on_session)
        log.info("node %s is running", self.name)

    def _on_session(self, event: SessionEvent) -> None:
        if self.role is not None:
            ROLE_ON_SESSION.get(event, lambda _role: None)(self.role)
        if event == SessionEvent.NEW_SESSION:
            self._renewed.set()
            self._wake.set()

    def _register(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        n = self.config.node
        static: dict[str, Any] = {
            "enable_hypervisor": n.enable_hypervisor,
            "enable_networking": n.enable_networking,
            "enable_storage": n.enable_storage,
            "libvirt_uri": n.libvirt_uri,
            "migration_uri": n.migration_uri or n.libvirt_uri,
            "migration_address": n.migration_address,
            "cluster_address": n.cluster_address or n.migration_address,
            "domain_type": n.domain_type,
            "console_log_directory": n.console_log_directory,
            "coordinator": self.coordinator,
            "registered": time.time(),
        }
        static["keepalive_interval"] = n.keepalive_interval
        if n.ipmi_host:   # the primary fences through it; the password apart, never listed
            static["ipmi"] = {"host": n.ipmi_host, "port": n.ipmi_port, "user": n.ipmi_user}
            ctx.store.put(ctx.schema.node_ipmi_secret(self.name), self.config.ipmi_password())
            threading.Thread(target=self._audit_bmc, name="bmc-audit", daemon=True).start()
        if n.enable_hypervisor:
            caps = ctx.hv.capabilities()
            static.update(hypervisor=caps.kind, live_migration=caps.live_migration)
        ctx.store.put(ctx.schema.node(self.name), static)
        self._lift_blocklist()
        ctx.cluster.set_fence(self.name, FenceState.NONE)   # back: fenced no more
        self._ensure_alive(replace_stale=True)

    def _lift_blocklist(self) -> None:
        """Back from a fence: the Ceph blocklist entries of its old clients go."""
        assert self.ctx is not None
        fence = self.ctx.cluster.node(self.name).fence
        cut = fence.get("blocklisted") or []
        if not cut:
            return
        try:
            with disks.connect(self.config.cluster.storage) as ceph:
                manage.lift(ceph, cut)
            log.info("back from a fence: Ceph blocklist entries lifted: %s", ", ".join(cut))
        except PvcError as e:
            log.warning("back from a fence: its Ceph blocklist entries stay (they expire in "
                        "an hour): %s", e)

    def _audit_bmc(self) -> None:
        """Is fencing through this node's BMC worth anything? (its answer to cipher suite 0
        and to a wrong password; a BMC that does not answer is fencing's concern)"""
        n = self.config.node
        bmc = IpmiBmc(BmcAddress(n.ipmi_host, n.ipmi_port, n.ipmi_user,
                                 self.config.ipmi_password()))
        problems = bmc.audit()
        for problem in problems:
            log.warning("the BMC of %s %s: fencing it proves nothing", self.name, problem)
        try:
            self._put_json("bmc", {"checked": time.time(), "problems": problems})
        except PvcError as e:
            log.warning("could not record the BMC's audit: %s", e)

    def _ensure_alive(self, replace_stale: bool = False) -> None:
        """The liveness znode: ephemeral, owned by this session."""
        ctx = self.ctx
        assert ctx is not None
        path = ctx.schema.node_alive(self.name)
        sid = ctx.store.session_id
        current = ctx.store.get_text(path)
        if current == sid:
            return
        if current is not None:
            if not replace_stale:
                return
            log.info("replacing the liveness znode of an earlier session %s", current)
            try:
                ctx.store.delete(path)
            except NoNode:
                pass
        try:
            ctx.store.create(path, sid, ephemeral=True)
        except NodeExists:
            pass

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        interval = self.config.node.keepalive_interval
        next_keepalive = time.monotonic() + interval
        while not self.stopping.is_set():
            self._wake.wait(max(0.0, next_keepalive - time.monotonic()))
            self._wake.clear()
            if self.stopping.is_set():
                break
            try:
                if time.monotonic() >= next_keepalive:
                    next_keepalive = time.monotonic() + interval
                    self._tick()
                else:
                    self._on_wake()
            except PvcError as e:
                # tried again soon, not at once: a store that refuses at once (a session
                # that just expired) made this loop spin, 165 warnings a second
                next_keepalive = min(next_keepalive, time.monotonic() + RETRY_AFTER_FAILURE)
                log.warning("keepalive failed: %s", e)

    def _on_wake(self) -> None:
        assert self.ctx is not None
        if self._renewed.is_set():
            self._renewed.clear()
            self._resync()
        if self._domains_dirty.is_set():
            self._domains_dirty.clear()
            self.ctx.publish_domains()
        if self._networks_dirty.is_set():      # before drift: VMs need their bridges
            self._networks_dirty.clear()
            self._build_networks()
        if self._drift.is_set():
            self._drift.clear()
            self._fix_drift()
        if self.role is not None:
            self.role.step()

    def reconcile_soon(self) -> None:
        """Check at once (not at the next keepalive) which VMs should run here."""
        self._nudge(self._drift)

    def _nudge(self, event: threading.Event) -> None:
        event.set()
        self._wake.set()

    def _build_networks(self, force: bool = False) -> None:
        if self.networks is not None:
            said = self.networks.reconcile(force)
            if said:
                log.info(said)
        if self.gateways is not None:
            self.gateways.refresh()   # only while primary; restarts a dnsmasq that died
        if self.aggregator is not None:
            self.aggregator.refresh()   # only while primary: new networks' leases watched

    def _resync(self) -> None:
        """After the session expired: what was ephemeral is re-created, what changed meanwhile
        is reconciled, at once (not at the next keepalive)."""
        log.info("new ZooKeeper session: registering again and reconciling")
        assert self.ctx is not None
        self._ensure_alive(replace_stale=True)
        self._put("daemon_state", DaemonState.RUN)
        self.ctx.cluster.set_fence(self.name, FenceState.NONE)   # alive: no fence pending
        self._build_networks(force=True)
        self._fix_drift()

    def _fix_drift(self) -> str:
        """Reconcile this node's VMs; what it changed ("" when nothing)."""
        if not self.config.node.enable_hypervisor:
            return ""
        assert self.ctx is not None
        state = self.ctx.store.get_text(self.ctx.schema.node_field(self.name, "domain_state"))
        # read, not taken from the watch: a VM that dies just after `maintenance on`
        # returned must find it on, even before the watch's notification arrived
        held = self.ctx.cluster.maintenance() is not None
        result = reconcile.reconcile(self.ctx, lambda vm: self._may_start(vm, state, held))
        for uuid in result.started_uuids:
            self.restarts.started(uuid)
        changed = ""
        if result.started or result.stopped or result.failed:
            log.info("drift: %s", result.sentence())
            changed = result.what_changed()
        self._publish_drift(result.unresolved)
        for uuid in self.restarts.newly_given_up():
            record_failure(self.ctx, uuid, self.restarts.refusal_text)
        if self.restarts.holding():
            self.restarts.forgive(set(self.ctx.hv.running()))
        if self.restarts.counting():   # a VM that went elsewhere starts afresh when it comes
            self.restarts.forget_all_but({vm.uuid for vm in self.ctx.cluster.vms()
                                          if vm.node == self.name})
        return changed

    def _tick(self, publish: bool = True) -> None:
        ctx = self.ctx
        assert ctx is not None
        self._ensure_alive(replace_stale=True)
        self._put_json("keepalive", f"{time.time():.3f}")
        said = []
        if publish and self.config.node.enable_hypervisor:
            self._domains_dirty.clear()
            running = ctx.hv.running()
            ctx.publish_domains(running)
            changed = self._fix_drift()   # publishes the resources too (one read of the VMs)
            said.append(f"{len(running)} domains run here; " + (changed or "nothing to fix"))
        self._build_networks()   # a peer's registration changed (cheap when nothing did)
        if self.role is not None:
            self.role.step()
            if self.role.is_primary:
                self._primary_duties()
            self._publish_services()
            said.append("the primary" if self.role.is_primary else "a secondary")
        self._say("; ".join(said) or "alive")

    def _say(self, sentence: str) -> None:
        """What this loop did, in one sentence: logged and published (`pvc node info`)
        when it differs from the last one, so an unchanged loop writes nothing more."""
        if sentence == self._said:
            log.debug("loop: %s", sentence)
            return
        log.info("loop: %s", sentence)
        self._put_json("loop", {"said": sentence, "at": time.time()})
        self._said = sentence

    def _publish_services(self) -> None:
        """What does not serve around pvc on this coordinator (written on change only)."""
        found = service_checks.problems(self.config, self.gateways)
        if found != self._services_seen:
            self._put_json("services", found)
            self._services_seen = found

    def _primary_duties(self) -> None:
        """Cluster housekeeping, done by the primary coordinator only: prune old records,
        sweep claims and operations that nobody will finish (see pvc.operations.sweep)."""
        assert self.ctx is not None
        for duty in self.duties:
            try:
                said = duty(self.ctx.cluster)
            except PvcError as e:
                said = f"{getattr(duty, '__name__', 'a primary duty')} failed: {e}"
            if said:
                log.info(said)

    def _may_start(self, vm: VM, state: str | None, maintenance: bool = False) -> str:
        """Why this daemon must not start vm on its own now ("" if it may): not while the
        cluster is in maintenance, a node that is being flushed (or is flushed) takes no VMs,
        and a crash loop is not fed."""
        if maintenance:
            return MAINTENANCE_HOLD
        if state not in (None, DomainState.READY):
            return f"this node is {state}"
        return self.restarts.refusal(vm)

    def _publish_drift(self, unresolved: dict[str, tuple[str, str]]) -> None:
        """What this node could not make match, and since when (written only on change)."""
        now = round(time.time(), 3)
        drift = {uuid: {"name": name, "why": why,
                        "since": self._drift_seen.get(uuid, {}).get("since", now)}
                 for uuid, (name, why) in unresolved.items()}
        if drift != self._drift_seen:
            assert self.ctx is not None
            self.ctx.store.put(self.ctx.schema.node_field(self.name, "drift"), drift)
            self._drift_seen = drift

    def _prune(self, cluster: Cluster) -> str:
        keep = self.config.cluster.operations.keep_records
        pruned = records.prune(cluster, keep)
        return f"pruned {pruned} old operation records (keeping {keep})" if pruned else ""

    def _alive(self, node: str) -> bool:
        assert self.ctx is not None
        return self.ctx.store.exists(self.ctx.schema.node_alive(node))

    def _on_domain_event(self, _uuid: str, name: str, event: str) -> None:
        log.debug("domain %s: %s", name, event)
        self._domains_dirty.set()
        # a domain that died may have to be started again; one migrated away is where it
        # should be (checking every VM after each move of a flush cost a node's daemon the
        # flush's duration times a reconcile of the whole cluster: bench_scale)
        if event in ("stopped", "crashed"):
            self._drift.set()
        self._wake.set()

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    def shutdown(self) -> None:
        """Leave cleanly: say `stop`, give up liveness and the primary role."""
        ctx = self.ctx
        if ctx is None:
            return
        if self.stats is not None:
            self.stats.stop()
        try:
            self._put("daemon_state", DaemonState.STOP)
            if self.role is not None and self.role.holder() == self.name:
                self._put("coordinator_state", CoordinatorState.RELINQUISH)
                self.services.stop_all()
                if self.role.floating is not None:
                    self.role.floating.release()
                ctx.store.delete(ctx.schema.primary)
                self._put("coordinator_state", CoordinatorState.SECONDARY)
            ctx.store.delete(ctx.schema.node_alive(self.name))
        except PvcError as e:
            log.warning("clean shutdown incomplete: %s", e)
        finally:
            ctx.close()
        log.info("node %s stopped", self.name)

    def _put_json(self, field: str, value: Any) -> None:
        assert self.ctx is not None
        self.ctx.store.put(self.ctx.schema.node_field(self.name, field), value)

    def _put(self, field: str, value: str) -> None:
        """One of this node's states, moved through its transition table."""
        assert self.ctx is not None
        self.ctx.cluster.set_node_state(self.name, field, value)


class CrashLoopGuard:
    """How often the daemon may start a VM that keeps dying: `limit` times within `window`
    seconds, then not again until an operator starts it (or the process restarts)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._starts: dict[str, deque[float]] = {}
        self._given_up: set[str] = set()
        self._reported: set[str] = set()

    @property
    def refusal_text(self) -> str:
        return (f"crash loop: started {self.limit} times within {self.window:g}s and died "
                "again; not restarted until an operator starts it")

    def refusal(self, vm: VM) -> str:
        """Why vm must not be started again now ("" if it may)."""
        if vm.uuid in self._given_up:
            return "crash loop"
        starts = self._starts.get(vm.uuid)
        if starts is None:
            return ""
        now = time.monotonic()
        while starts and now - starts[0] > self.window:
            starts.popleft()
        if len(starts) >= self.limit:
            self._given_up.add(vm.uuid)
            return "crash loop"
        return ""

    def started(self, uuid: str) -> None:
        self._starts.setdefault(uuid, deque()).append(time.monotonic())

    def holding(self) -> bool:
        return bool(self._given_up)

    def forgive(self, running: set[str]) -> None:
        """VMs an operator started again get a fresh count."""
        for uuid in self._given_up & running:
            self._given_up.discard(uuid)
            self._reported.discard(uuid)
            self._starts.pop(uuid, None)

    def counting(self) -> bool:
        return bool(self._starts)

    def forget_all_but(self, assigned: set[str]) -> None:
        """Starts of VMs no longer assigned to this node are not a crash loop here: a VM that
        moved away (a flush, a fence elsewhere) and comes back is started, not restarted."""
        for uuid in set(self._starts) - assigned:
            self._starts.pop(uuid, None)
            self._given_up.discard(uuid)
            self._reported.discard(uuid)

    def newly_given_up(self) -> list[str]:
        new = sorted(self._given_up - self._reported)
        self._reported |= set(new)
        return new
