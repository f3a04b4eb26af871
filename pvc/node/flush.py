"""Node flush and unflush, under the cluster flush lock.

Flush: take the lock (fair queue, freed if its holder dies) → node `flushing` → plan a target
for every VM running here (the VM's selector and node limit first, the cluster's default second,
counting what the plan already put on each node) → move them with bounded parallelism → node
`flushed` → release. A VM with nowhere to go (or migration method `none`) is shut down cleanly
and marked to start again on unflush; a VM that fails to move fails the operation, naming it,
and the node stays `flushing`. Nothing is ever skipped silently.

Unflush: take the same lock → `unflushing` → VMs whose last node is this one come back, VMs
marked to start here start → `ready`.

Everything a flush needs happens inside its own task (migrations are peer-to-peer between the
libvirtds), so a flush never waits for a worker slot elsewhere: flushes queued on the lock on
every node cannot deadlock the pools.
Idempotent: a redelivered flush re-plans from what the hypervisors report and finishes the job.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Callable, Iterator

from pvc.core import counters, states
from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, InvalidInput, NotFound, OperationFailed, PvcError
from pvc.core.models import VM, Node
from pvc.core.states import DaemonState, VmState
from pvc.core.store import NodeExists
from pvc.node.flushlock import lock_status
from pvc.operations import records
from pvc.operations.holds import describe
from pvc.operations.requests import Request, require_acting
from pvc.operations.runner import Runner
from pvc.vm import disks, placement
from pvc.vm.migration import Move, move_vm, resolve_method, settle

if TYPE_CHECKING:
    from pvc.node.context import NodeContext

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- the lock

@contextmanager
def flush_lock(ctx: "NodeContext", run: Runner, kind: str) -> Iterator[bool]:
    """Wait for the cluster flush lock (saying who holds it), hold it, release it. Yields
    False instead when the operation was cancelled before it got the lock."""
    assert run.record is not None
    if run.cancelled.is_set():
        yield False
        return
    node = run.record.target_id
    ident = json.dumps({"op": run.op_id, "kind": kind, "node": node}, sort_keys=True)
    status = lock_status(ctx.cluster)
    waiting = "taking the flush lock (free)"
    if status.holder is not None:
        waiting = (f"waiting for the flush lock held by {status.holder.get('node')}'s "
                   f"{status.holder.get('kind')} (op {status.holder.get('op')}), "
                   f"{len(status.queue)} queued ahead")
    try:
        run.set_state(states.OpState.WAITING, waiting)
    except Conflict:              # cancelled in this very moment
        yield False
        return
    lock = ctx.store.lock(ctx.schema.flush_lock, ident)
    run.on_cancel(lock.cancel)    # an operator's cancel ends the wait
    asked = time.time()
    if not lock.acquire():
        yield False
        return
    acquired = time.time()
    counters.observe(ctx.cluster, "flush_lock_wait_seconds", {"kind": kind}, acquired - asked)
    try:
        if run.cancelled.is_set():
            yield False
            return
        run.running("took the flush lock")
        run.set_fields(lock_acquired=acquired)
        yield True
    finally:
        released = time.time()   # before the release: a hand-off measures all it takes
        lock.release()
        try:
            run.set_fields(lock_released=released)
        except PvcError:
            pass


# ---------------------------------------------------------------------- request side

def request(cluster: Cluster, node: str, kind: str, reason: str = "",
            max_parallel: int = 0, park: str = "") -> Request:
    """Record a flush/unflush of node; the caller submits it to the node's queue.
    max_parallel (0: the configured limits) caps the migrations running at once. park (a
    flush): move nothing, shut every VM down cleanly where it is, to start again on this
    node's unflush; the text says why (the whole cluster goes down, a flush could not finish)."""
    if max_parallel < 0:
        raise InvalidInput("--max-parallel must be at least 1")
    target = cluster.node(node)
    require_acting(target, f"{kind} itself")
    if kind == "unflush" and target.cordon:   # it would bring VMs back to it
        raise Conflict(f"node {node} is cordoned ({describe(target.cordon)}): uncordon it "
                       f"first (pvc node uncordon {node})")
    busy = cluster.store.get_text(cluster.schema.node_operation(node))
    if busy:
        raise Conflict(f"node {node} already has operation {busy} in flight "
                       f"(see: pvc task show {busy})")
    op = records.new_operation(f"node.{kind}", node, node, node, reason,
                               args={"max_parallel": max_parallel, "park": park})
    tx = cluster.store.transaction()
    tx.create(cluster.schema.operation(op.id), op.to_json())
    tx.create(cluster.schema.node_operation(node), op.id, refuse={NodeExists: Conflict(
        f"node {node} got another operation at the same moment; nothing was changed")})
    tx.commit()
    return Request(op, submit=True)


# ---------------------------------------------------------------------- planning (pure)

@dataclass
class Planned:
    vm: VM
    target: str | None     # None: shut down here and start again on unflush
    method: str            # live / shutdown / none
    note: str = ""

    def describe(self) -> str:
        if self.target is None:
            return f"{self.vm.name}: shut down, starts again on unflush ({self.note})"
        return f"{self.vm.name} → {self.target} ({self.method}{', ' + self.note if self.note else ''})"


def plan_flush(me: str, vms: list[VM], running_here: set[str], nodes: list[Node],
               default_selector: str, default_method: str, park: str = "") -> list[Planned]:
    """A target for every VM running on `me`, spreading them with a shared Plan; and for
    every VM an earlier attempt of this flush was moving when its worker died (it left `me`,
    should run, runs nowhere): its move is finished by starting it on its target. With
    `park` (why), every VM running here is shut down here instead (to start on unflush)."""
    by_name = {n.name: n for n in nodes}
    source = by_name.get(me)
    plan = placement.Plan()
    out: list[Planned] = []
    running_anywhere = {u for n in nodes if n.daemon_state == DaemonState.RUN
                        for u in n.domains} | running_here
    interrupted = {v.uuid for v in vms if v.last_node == me and v.node != me
                   and v.state == VmState.START and v.uuid not in running_anywhere}
    for vm in sorted((v for v in vms if v.uuid in running_here | interrupted),
                     key=lambda v: v.name):
        if park and vm.uuid in running_here:
            out.append(Planned(vm, None, "none", park))
            continue
        method = resolve_method("", vm, default_method)
        if method == "none":
            out.append(Planned(vm, None, "none", "migration method none"))
            continue
        kept = by_name.get(vm.node) if vm.node != me else None
        target: Node | None = kept
        if kept is None or not kept.is_target():      # a resumed flush keeps its plan
            target = placement.choose(vm, nodes, default_selector, plan, exclude=[me])
        if target is None:
            out.append(Planned(vm, None, method,
                               placement.why_none(vm, nodes, plan, exclude=[me])))
            continue
        plan.add(target.name, vm)
        note = ""
        if method == "live" and not (target.live_migration and source and source.live_migration):
            method, note = "shutdown", "hypervisor cannot live-migrate"
        out.append(Planned(vm, target.name, method, note))
    return out


def plan_for(cluster: Cluster, node: str) -> list[Planned]:
    """The plan a flush of node would follow now (for --dry-run)."""
    nodes = cluster.nodes()
    me = next((n for n in nodes if n.name == node), None)
    if me is None:
        raise NotFound(f"no node named {node!r}")
    mig = cluster.config.cluster.migration
    return plan_flush(node, cluster.vms(), set(me.domains), nodes, mig.default_selector,
                      mig.default_method)


# ---------------------------------------------------------------------- execution

class Outcome(StrEnum):
    """Where a VM of a flush or unflush ended up."""
    MOVED = "moved"          # migrated (flush) or returned (unflush)
    PARKED = "parked"        # shut down, to start again on unflush
    STARTED = "started"      # started by unflush
    WAITING = "waiting"      # its source node is down: it comes back when that node runs
    FAILED = "failed"
    SKIPPED = "skipped"      # left where it is: the operation stopped (cancel, lost session)


# Outcomes an attempt after a lost worker keeps from the earlier attempts; the others are
# planned again from what the hypervisors report.
KEPT_ON_RESUME = frozenset({Outcome.MOVED, Outcome.PARKED, Outcome.STARTED})


@dataclass
class Tally:
    """Every VM of the operation by outcome, across attempts."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)        # vm -> why (failures)

    def names(self, outcome: Outcome) -> list[str]:
        return sorted(n for n, o in self.outcomes.items() if o == outcome)

    def count(self, outcome: Outcome) -> int:
        return len(self.names(outcome))

    @property
    def done(self) -> int:
        return len(self.outcomes)


class NodeJob:
    """State shared by the threads of one flush or unflush."""

    def __init__(self, ctx: "NodeContext", run: Runner, pending: list[str]) -> None:
        """pending: the VMs this attempt works on. An attempt after a lost worker counts
        what the earlier ones did (their outcomes and their moves that completed)."""
        self.ctx = ctx
        self.run = run
        self.tally = Tally()
        assert run.record is not None
        progress = run.record.progress
        for name, outcome in progress.get("outcomes", {}).items():
            if outcome in KEPT_ON_RESUME and name not in pending:
                self.tally.outcomes[name] = Outcome(outcome)
        for name in progress.get("items", {}):
            if name not in pending and name not in self.tally.outcomes:
                self.tally.outcomes[name] = Outcome.MOVED   # finished before the worker died
        self.total = len(pending) + self.tally.done

    def report(self, vm: str, state: str, outcome: Outcome | None = None,
               note: str = "") -> None:
        """Publish a VM's progress; with an outcome, the VM is done."""
        with self.tally.lock:
            if outcome is not None:
                self.tally.outcomes[vm] = outcome
                if note:
                    self.tally.notes[vm] = note
            self.run.progress(f"{vm}: {state}", done=self.tally.done, total=self.total,
                              item=vm, item_state=state, outcome=outcome)

    def stopped(self, vm: VM) -> bool:
        """True (and the VM reported as left alone) once the operation must start no new
        move: an operator cancelled, or the session that held the flush lock expired. The
        moves in flight finish."""
        if self.run.may_continue(holds_lock=True):
            return False
        why = ("the operation was cancelled" if self.run.cancelled.is_set() else
               "the flush lost its ZooKeeper session, and with it the flush lock")
        self.report(vm.name, f"left where it is: {why}", Outcome.SKIPPED)
        return True

    def claim(self, vm: VM, change: Callable[[VM], None]) -> VM:
        return self.run.claim(vm.uuid, vm.name, change, on_wait=lambda holder: self.report(
            vm.name, f"waiting for operation {holder}"))

    def failures(self) -> str:
        return "; ".join(f"{n}: {self.tally.notes.get(n, 'failed')}"
                         for n in self.tally.names(Outcome.FAILED))


def _set_domain_state(ctx: "NodeContext", node: str, state: str) -> None:
    ctx.cluster.set_node_state(node, "domain_state", state)


def run_parallel(items: list[Any], target_of: Callable[[Any], str], work: Callable[[Any], None],
                 max_parallel: int, per_target: int) -> None:
    """Run work(item) for all items, at most max_parallel at once and at most per_target per
    target; items are interleaved by target so a busy target does not hold up the others."""
    by_target: dict[str, list[Any]] = {}
    for item in items:
        by_target.setdefault(target_of(item), []).append(item)
    ordered: list[Any] = []
    while any(by_target.values()):
        for queue in by_target.values():
            if queue:
                ordered.append(queue.pop(0))
    gates = {t: threading.BoundedSemaphore(per_target) for t in {target_of(i) for i in items}}

    def gated(item: Any) -> None:
        with gates[target_of(item)]:
            work(item)

    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        list(pool.map(gated, ordered))


def limits(run: Runner, max_parallel: int, per_node: int, per_target: int) -> tuple[int, int]:
    """(migrations at once, at once into one target): the configured limits, or the
    operator's --max-parallel for this operation, which replaces all of them."""
    assert run.record is not None
    override = int(run.record.args.get("max_parallel") or 0)
    if override:
        return override, override
    return min(max_parallel, per_node), per_target


def _run_node_op(ctx: "NodeContext", run: Runner, kind: str,
                 work: Callable[["NodeContext", Runner, str], tuple[NodeJob, str]]) -> str:
    """What flush and unflush share: the lock, the node's domain states, and failing (naming
    every VM that failed) when not everything went well."""
    assert run.record is not None
    spec = states.DOMAIN_OPS[kind]
    node = run.record.target_id
    with flush_lock(ctx, run, kind) as locked:
        if not locked:
            run.cancelled_with(f"cancelled before it took the flush lock; {node} unchanged")
            return "cancelled"
        _set_domain_state(ctx, node, spec.during)
        _hold_osds(ctx, run, node, spec.noout_during)
        try:
            job, summary = work(ctx, run, node)
        finally:
            run.release_claims()
            ctx.refresh()
        stays = f"({node} stays {spec.during})"
        skipped = job.tally.count(Outcome.SKIPPED)
        if skipped and run.cancelled.is_set():
            run.cancelled_with(f"cancelled: {summary}, {skipped} not moved {stays}")
            return "cancelled"
        if skipped:
            raise OperationFailed(f"lost the ZooKeeper session holding the flush lock: "
                                  f"{summary}, {skipped} not moved; run it again {stays}")
        if job.tally.count(Outcome.FAILED):
            raise OperationFailed(f"{summary}, {job.tally.count(Outcome.FAILED)} failed: "
                                  f"{job.failures()} {stays}")
        _set_domain_state(ctx, node, spec.after)
        _hold_osds(ctx, run, node, spec.noout_after)
    return summary


def _hold_osds(ctx: "NodeContext", run: Runner, node: str, noout: bool | None) -> None:
    """Ceph's noout for the node's OSDs, set or cleared (None: neither; nor without
    storage). Ceph not answering is noted, not fatal: the VMs' moves matter more."""
    storage = ctx.config.cluster.storage
    if noout is None or not storage.enabled or not ctx.cluster.node(node).enable_storage:
        return
    said = "set" if noout else "cleared"
    try:
        with disks.connect(storage) as ceph:
            ceph.set_group_flag("noout", node, noout)
        run.note(f"{node}: Ceph's noout {said} for its OSDs")
    except PvcError as e:
        run.note(f"{node}: Ceph's noout could not be {said}: {e}")


def execute_flush(ctx: "NodeContext", run: Runner) -> str:
    return _run_node_op(ctx, run, "flush", _flush_work)


def execute_unflush(ctx: "NodeContext", run: Runner) -> str:
    return _run_node_op(ctx, run, "unflush", _unflush_work)


def _flush_work(ctx: "NodeContext", run: Runner, node: str) -> tuple[NodeJob, str]:
    mig = ctx.config.cluster.migration
    nodes = ctx.cluster.nodes()
    vms, running = ctx.cluster.vms(), ctx.hv.running()
    plan = plan_flush(node, vms, set(running), nodes, mig.default_selector,
                      mig.default_method, run.record.args.get("park", "") if run.record else "")
    known = {vm.uuid for vm in vms}
    strangers = sorted(d.name for u, d in running.items() if u not in known)
    job = NodeJob(ctx, run, [p.vm.name for p in plan])
    by_name = {n.name: n for n in nodes}
    run.progress(f"flushing {len(plan)} VMs", done=job.tally.done, total=job.total)
    for p in plan:
        job.report(p.vm.name, "queued")
    parallel, per_target = limits(run, mig.max_parallel, mig.per_source, mig.per_target)
    run_parallel(plan, lambda p: p.target or "(none)",
                 lambda p: _flush_one(job, p, node, by_name), parallel, per_target)
    parked = job.tally.names(Outcome.PARKED)
    return job, (f"flushed {node}: {job.tally.count(Outcome.MOVED)} moved, "
                 f"{len(parked)} shut down to start on unflush"
                 + (f" ({', '.join(parked)})" if parked else "")
                 + (f"; {len(strangers)} domains pvc does not know still run there "
                    f"({', '.join(strangers)})" if strangers else ""))


def _unflush_work(ctx: "NodeContext", run: Runner, node: str) -> tuple[NodeJob, str]:
    nodes = ctx.cluster.nodes()
    by_name = {n.name: n for n in nodes}
    vms = ctx.cluster.vms()
    returning = [v for v in vms if v.last_node == node]
    starting = [v for v in vms if v.node == node and v.autostart
                and v.state != VmState.DISABLE and v.last_node != node]
    job = NodeJob(ctx, run, [v.name for v in returning + starting])
    run.progress(f"unflushing: {len(returning)} to return, {len(starting)} to start",
                 done=job.tally.done, total=job.total)
    mig = ctx.config.cluster.migration
    # every VM comes to this node: the per-target limit is the one that binds
    parallel, per_target = limits(run, mig.max_parallel, mig.per_target, mig.per_target)
    run_parallel(returning, lambda v: node, lambda v: _return_one(job, v, node, by_name),
                 parallel, per_target)
    for vm in starting:
        _start_one(job, vm)
    waiting = job.tally.names(Outcome.WAITING)
    return job, (f"unflushed {node}: {job.tally.count(Outcome.MOVED)} returned, "
                 f"{job.tally.count(Outcome.STARTED)} started"
                 + (f", {len(waiting)} wait for their node to run again "
                    f"({', '.join(waiting)})" if waiting else ""))


def _flush_one(job: NodeJob, p: Planned, me: str, nodes: dict[str, Node]) -> None:
    ctx, vm = job.ctx, p.vm
    if job.stopped(vm):
        return
    try:
        if p.target is None:
            def mark(v: VM) -> None:
                v.state, v.autostart = VmState.STOP, True

            job.claim(vm, mark)
            job.report(vm.name, "shutting down")
            how = ctx.hv.shutdown(vm.uuid, ctx.config.cluster.operations.shutdown_timeout)
            ctx.publish_domains()
            job.report(vm.name, f"{how}, starts again on unflush ({p.note})", Outcome.PARKED)
            return

        def assign(v: VM) -> None:
            v.node = p.target or v.node
            v.last_node = v.last_node or me

        job.claim(vm, assign)
        job.report(vm.name, f"migrating to {p.target} ({p.method})")
        outcome = move_vm(ctx, Move(vm, nodes[me], nodes[p.target], p.method),
                          lambda msg: job.report(vm.name, msg))
        job.report(vm.name, outcome, Outcome.MOVED)
    except PvcError as e:
        if p.target is not None:
            settle(ctx, vm.uuid, {"last_node": vm.last_node}, nodes[me], nodes[p.target])
        job.report(vm.name, f"failed: {e}", Outcome.FAILED, str(e))


def _return_one(job: NodeJob, vm: VM, me: str, nodes: dict[str, Node]) -> None:
    ctx = job.ctx
    running = ctx.cluster.running_on(vm.uuid, list(ctx.cluster.nodes()))
    source = running[0] if running else ""
    if job.stopped(vm):
        return
    down = source and source != me and nodes[source].daemon_state != DaemonState.RUN
    if down:   # its hypervisor may be gone or stale: never move a VM out of a dead node
        job.report(vm.name, f"waits for {source} (daemon {nodes[source].daemon_state})",
                   Outcome.WAITING)
        return
    try:
        def home(v: VM) -> None:
            v.node, v.last_node = me, ""

        fresh = job.claim(vm, home)
        if source == me:
            job.report(vm.name, "already here", Outcome.MOVED)
            return
        if not source:
            if fresh.autostart and fresh.state != VmState.DISABLE:   # parked by a flush
                _start_one(job, fresh)
            else:
                job.report(vm.name, "assigned back (it is stopped)", Outcome.MOVED)
            return
        method = resolve_method("", vm, ctx.config.cluster.migration.default_method)
        method = "shutdown" if method == "none" else method
        job.report(vm.name, f"returning from {source} ({method})")
        outcome = move_vm(ctx, Move(vm, nodes[source], nodes[me], method),
                          lambda msg: job.report(vm.name, msg))
        job.report(vm.name, outcome, Outcome.MOVED)
    except PvcError as e:
        if source and source != me:
            settle(ctx, vm.uuid, {"last_node": me}, nodes[source], nodes[me])
        job.report(vm.name, f"failed: {e}", Outcome.FAILED, str(e))


def _start_one(job: NodeJob, vm: VM) -> None:
    ctx = job.ctx
    if job.stopped(vm):
        return
    try:
        def start(v: VM) -> None:
            v.state, v.autostart = VmState.START, False

        job.claim(vm, start)
        ctx.hv.start(ctx.node_xml(vm.uuid), vm.uuid)
        ctx.publish_domains()
        job.report(vm.name, f"started on {ctx.name}", Outcome.STARTED)
    except PvcError as e:
        job.report(vm.name, f"failed: {e}", Outcome.FAILED, str(e))
