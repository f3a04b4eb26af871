"""Fencing: a node that stops answering is powered off over IPMI, and only once the BMC
confirms the power is off are its VMs started elsewhere. Two copies of a VM writing one disk is
the worst thing a cluster manager can cause, so a fence that is not confirmed restarts nothing:
it is recorded, the cluster is degraded, and the primary tries again.

Detection (the primary's duty, FenceWatch): a node is dead when its daemon said `run` but its
ZooKeeper session is gone and its last keepalive is older than `fencing.intervals` of its
keepalive intervals; the primary then checks `fencing.saving_throws` more times, a keepalive
apart, before it asks for a `node.fence` operation (run by its own worker). Never the primary
itself: a dead primary loses its role first and the new primary fences it.

The fence (execute): one at a time cluster-wide (a ZooKeeper lock), every step in the record:
power off, confirm off, daemon state `fenced`; then with `fencing.action: migrate` the node's
VMs that should run are placed on other nodes (their daemons start them) with `last_node` the
fenced node, and those with nowhere to go are marked to start on its unflush; the node is
`flushed`, so its daemon comes back empty and `pvc node unflush` brings the VMs home.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pvc.core import counters
from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.core.errors import Conflict, OperationFailed, PvcError, Unavailable
from pvc.core.models import VM, Node
from pvc.core.states import DaemonState, DomainState, FenceState, VmState
from pvc.core.store import KEEP, Transaction
from pvc.node.ipmi import Bmc, BmcAddress, BmcError, IpmiBmc
from pvc.operations import records
from pvc.operations.requests import Request
from pvc.operations.runner import Runner
from pvc.storage import manage
from pvc.vm import disks, placement

if TYPE_CHECKING:
    from pvc.node.context import NodeContext

BmcFor = Callable[[BmcAddress], Bmc]
log = logging.getLogger(__name__)
POLL = 0.5           # seconds between power-state checks while it goes off
LOCK_WAIT = 120.0    # seconds a fence waits for another to finish
RIDE_OUT = 60.0      # seconds a fence waits for ZooKeeper once the node is off


# ---------------------------------------------------------------------- detection

def is_dead(node: Node, now: float, intervals: int) -> bool:
    """Said it runs, has no session, and missed `intervals` keepalives."""
    silent = now - node.keepalive if node.keepalive else 0.0
    return (node.daemon_state == DaemonState.DEAD
            and silent > max(node.keepalive_interval, 0.1) * intervals)


@dataclass
class FenceWatch:
    """Which dead nodes the primary should fence now (after their saving throws)."""
    me: str
    intervals: int
    saving_throws: int
    suspects: dict[str, int] = field(default_factory=dict)

    def due(self, nodes: list[Node], now: float) -> list[str]:
        out = []
        for node in nodes:
            if node.name == self.me or not node.ipmi or not is_dead(node, now, self.intervals):
                self.suspects.pop(node.name, None)
                continue
            seen = self.suspects.get(node.name, 0) + 1
            self.suspects[node.name] = seen
            if seen > self.saving_throws:
                self.suspects[node.name] = 0     # a failed fence is tried again, as patiently
                out.append(node.name)
        return out


def request(cluster: Cluster, target: str, primary: str, reason: str,
            by_operator: bool = False) -> Request:
    """A `node.fence` of target, run by the primary's worker (one in flight per node).
    by_operator: `pvc node power NODE off`: the node is fenced whether its daemon lives or
    not (the operator cut its power), so its VMs recover exactly as after a fence."""
    op = records.new_operation("node.fence", target, target, primary, reason,
                               {"by_operator": True} if by_operator else None)
    records.record_node_operation(cluster, op)
    counters.count(cluster, "fences", {"result": "asked"})
    return Request(op, submit=True)


def power_off_request(cluster: Cluster, target: str, reason: str) -> Request:
    """The operator's power-off of target, as a fence run by a node that is not target (the
    primary, or when target is the primary another node whose daemon and worker run)."""
    nodes = cluster.nodes()
    primary = cluster.store.get_text(cluster.schema.primary) or ""
    candidates = [primary] + [n.name for n in nodes if n.name in cluster.config.cluster.coordinators] \
        + [n.name for n in nodes]
    by_name = {n.name: n for n in nodes}
    for name in candidates:
        n = by_name.get(name)
        if n is not None and name != target and n.daemon_state == DaemonState.RUN \
                and n.workers > 0:
            return request(cluster, target, name, reason or "powered off by the operator",
                           by_operator=True)
    raise OperationFailed(f"no other node's daemon and worker run to power {target} off and "
                          "recover its VMs")


# ---------------------------------------------------------------------- the fence

def bmc_address(cluster: Cluster, node: Node) -> BmcAddress | None:
    if not node.ipmi:
        return None
    password = cluster.store.get_text(cluster.schema.node_ipmi_secret(node.name)) or ""
    return BmcAddress(str(node.ipmi.get("host")), int(node.ipmi.get("port", 623)),
                      str(node.ipmi.get("user", "")), password)


def execute(ctx: "NodeContext", run: Runner, bmc_for: BmcFor = IpmiBmc) -> str:
    """The fence: under the fence lock, power the node off (confirmed) and recover its VMs."""
    assert run.record is not None
    cluster, cfg = ctx.cluster, ctx.config
    lock = cluster.store.lock(cluster.schema.fence_lock, f"{cfg.node.name}:{run.op_id}")
    if not lock.acquire(timeout=LOCK_WAIT):
        raise OperationFailed("another fence held the fence lock too long; tried later")
    try:
        return _fence(cluster, cfg, run.record.target_id, run, bmc_for)
    finally:
        lock.release()


def _fence(cluster: Cluster, cfg: Config, target: str, run: Runner, bmc_for: BmcFor) -> str:
    node = cluster.node(target)
    by_operator = bool(run.record.args.get("by_operator")) if run.record else False
    if node.daemon_state != DaemonState.DEAD and not by_operator:
        return f"{target} is {node.daemon_state}: not fenced"
    if cluster.maintenance() is not None:   # asked before maintenance began
        return f"{target} not fenced: the cluster is in maintenance"
    address = bmc_address(cluster, node)
    if address is None:
        _failed(cluster, target, "no BMC configured (node.ipmi_host)")
    assert address is not None
    run.note(f"powering {target} off over IPMI ({address})")
    try:
        bmc = bmc_for(address)
        bmc.power_off()
        _until_off(bmc, cfg.cluster.fencing.power_timeout)
    except BmcError as e:
        _failed(cluster, target, str(e))
    off = time.time()
    return _riding_out(lambda: _fenced(cluster, cfg, target, run, off))


def _fenced(cluster: Cluster, cfg: Config, target: str, run: Runner, off: float) -> str:
    """The node is off (since `off`): record it and start its VMs elsewhere (every step
    idempotent)."""
    run.note(f"{target}: power off confirmed by its BMC", at=off)
    if cluster.node(target).fence.get("state") != FenceState.FENCED:   # a redelivery: once
        counters.count(cluster, "fences", {"result": "done"})
    cluster.set_node_state(target, "daemon_state", DaemonState.FENCED)
    # what it ran died with it: its old running list would show its VMs on two nodes
    cluster.store.put(cluster.schema.node_field(target, "domains"), {})
    cut = _cut_off_storage(cluster, cfg, target, run.note)
    cluster.set_fence(target, FenceState.FENCED, at=time.time(), blocklisted=cut)
    if cfg.cluster.fencing.action != "migrate":
        return f"{target} fenced (powered off); its VMs stay recorded on it (action none)"
    return f"{target} fenced (powered off); " + recover(cluster, cfg, target, run.note)


def _cut_off_storage(cluster: Cluster, cfg: Config, target: str,
                     note: Callable[[str], None]) -> list[str]:
    """Before its VMs start elsewhere: its OSDs marked down, its Ceph clients blocklisted,
    their disk locks broken (the addresses cut off; [] without storage). The BMC said off;
    this holds even if it lied. A Ceph that does not answer costs the new copies a wait on
    the old locks (librbd breaks them itself once the dead client's watch expires), never a
    second writer."""
    storage = cfg.cluster.storage
    if not storage.enabled:
        return []
    node = cluster.node(target)
    host = node.cluster_address or node.migration_address
    volumes = [v for vm in cluster.vms() if vm.node == target for v in vm.volumes]
    try:
        with disks.connect(storage) as ceph:
            cut = manage.cut_off(ceph, target, host, volumes)
    except PvcError as e:
        note(f"{target}: its Ceph clients could not be blocklisted ({e}); its disks' locks "
             "are left to expire")
        return []
    if cut:
        note(f"{target}: Ceph clients blocklisted, their disk locks broken: {', '.join(cut)}")
    return cut


def _riding_out(step: Callable[[], str]) -> str:
    """Once the node is off, what follows must happen: a ZooKeeper that does not answer is
    waited for (up to RIDE_OUT), not given up on. A fenced coordinator took its ZooKeeper
    member along, and if that member led the ensemble, the others are electing a leader and
    the fence's session may have to move to another member."""
    deadline = time.monotonic() + RIDE_OUT
    while True:
        try:
            return step()
        except Unavailable as e:
            if time.monotonic() > deadline:
                raise
            log.warning("fence: %s; trying again (the node is off already)", e)
            time.sleep(POLL)   # back-off: each attempt already waited for the store


def _until_off(bmc: Bmc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if bmc.power_state() == "off":
            return
        if time.monotonic() > deadline:
            raise BmcError(f"the power was not reported off within {timeout:g}s")
        time.sleep(POLL)   # the BMC has no push; it reports off within a second or two


def _failed(cluster: Cluster, target: str, why: str) -> None:
    """Recorded where `cluster status` shows it (unless the node was fenced already: it is
    off); the VMs stay where they are."""
    try:
        cluster.set_fence(target, FenceState.FAILED, error=why, at=time.time())
        counters.count(cluster, "fences", {"result": "failed"})
    except Conflict:
        pass   # fenced before: that record stands
    raise OperationFailed(f"fencing {target} failed: {why}; none of its VMs was started "
                          "elsewhere")


# ---------------------------------------------------------------------- recovery

def recover(cluster: Cluster, cfg: Config, dead: str,
            note: Callable[[str], None] = lambda _m: None) -> str:
    """The fenced node's VMs that should run go to other nodes (their daemons start them);
    those with nowhere to go start on its unflush. The node becomes `flushed`."""
    nodes = cluster.nodes()
    plan = placement.Plan()
    started, parked = [], []
    for vm in sorted(cluster.vms(), key=lambda v: v.name):
        if vm.node != dead or vm.state != VmState.START:
            continue
        target = placement.choose(vm, nodes, cfg.cluster.migration.default_selector, plan,
                                  exclude=[dead])
        if target is not None:
            plan.add(target.name, vm)
        cluster.store.update(cluster.schema.vm(vm.uuid), _reassign(dead, target))
        if target is not None:
            started.append(f"{vm.name} → {target.name}")
        else:
            parked.append(vm.name)
            note(f"{vm.name}: {placement.why_none(vm, nodes, plan, exclude=[dead])}")
    cluster.set_node_state(dead, "domain_state", DomainState.FLUSHED)
    for line in started:
        note(f"started elsewhere: {line}")
    return (f"{len(started)} VMs started elsewhere"
            + (f" ({', '.join(started)})" if started else "")
            + (f", {len(parked)} wait for its unflush ({', '.join(parked)})" if parked else ""))


def _reassign(dead: str, target: Node | None) -> Callable[[Any, Transaction], Any]:
    def change(record: Any, _tx: Transaction) -> Any:
        vm = VM.from_json(record)
        if vm.node != dead:
            return KEEP          # moved meanwhile
        vm.last_node = vm.last_node or dead
        if target is not None:
            vm.node = target.name
        else:
            vm.state, vm.autostart = VmState.STOP, True
        return vm.to_json()
    return change


def fence_duty(cluster: Cluster, cfg: Config, watch: FenceWatch,
               submit: Callable[[Request], None]) -> str:
    """The primary's duty: ask for a fence of each node that is due."""
    if cluster.maintenance() is not None:   # nothing acts on its own; a fresh count after
        watch.suspects.clear()
        return ""
    said = []
    for target in watch.due(cluster.nodes(), time.time()):
        try:
            req = request(cluster, target, cfg.node.name,
                          f"{target} missed {watch.intervals} keepalives and "
                          f"{watch.saving_throws} more checks")
        except PvcError as e:
            said.append(f"fence of {target} not asked: {e}")
            continue
        submit(req)
        said.append(f"fencing {target}: operation {req.op.id}")
    return "; ".join(said)
