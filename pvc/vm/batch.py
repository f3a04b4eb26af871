"""Many VMs at once: `pvc vm start|stop|shutdown|restart|disable VM... | --node N | --all`.

Request side (CLI): the VMs are checked against one read of the cluster (their records with
versions, the nodes, the busy markers); starts are placed with one plan, so each counts those
placed before it. The VMs are grouped by the node that must act: one operation per node (of up
to BATCH VMs), recorded with its VMs' new desired states and busy markers in one transaction,
and sent as one message. A VM whose change needs no node (a stop of a VM that does not run)
changes in a record of its own that ends at once. A VM that cannot be acted on (busy, a state
the action does not take, nowhere to run) is refused by name, and the others go on.

Execution side (the node's worker): the VMs are acted on BATCH_PARALLEL at a time, each an
item of the record's progress (done of total: one bar for `--wait`) and freed as soon as it is
done. A VM that fails is named with its error and the others go on; the operation fails when
any did, saying how many. A worker lost midway is replaced by one that skips the VMs done.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pvc.core import states
from pvc.core.cluster import Cluster
from pvc.core.errors import (
    Conflict,
    HypervisorError,
    NotFound,
    OperationFailed,
    PvcError,
    Unavailable,
)
from pvc.core.models import VM, Operation
from pvc.core.store import NoNode, Versioned
from pvc.operations import records
from pvc.operations.requests import previous
from pvc.operations.runner import Runner
from pvc.vm import lifecycle, placement

if TYPE_CHECKING:  # the CLI imports this module for requests: keep the hypervisor out of it
    from pvc.operations.frame import NodeFrame

log = logging.getLogger(__name__)

BATCH = 400   # VMs per operation: its transaction (a record and a marker each, ~0.7 KB)
              # stays well below ZooKeeper's 1 MiB request limit
BATCH_PARALLEL = 8   # VMs a node's worker acts on at once (shutdowns wait for guests)
DONE, FAILED = "done", "failed"


@dataclass
class BatchRequest:
    action: str
    ops: list[Operation] = field(default_factory=list)   # to send, one per node (and batch)
    settled: Operation | None = None       # changed with no node to act: ended already
    refused: dict[str, str] = field(default_factory=dict)   # VM name -> why it was left

    def vms(self) -> int:
        """How many VMs the request changed."""
        every = self.ops + ([self.settled] if self.settled else [])
        return sum(len(op.args.get("vms", {})) for op in every)


# ---------------------------------------------------------------------- request side

def select(cluster: Cluster, refs: list[str], node: str = "",
           everything: bool = False) -> list[Versioned]:
    """The VM records (with versions) named by refs (names or UUIDs), or every VM assigned
    to or running on node, or every VM. An unknown name is refused before anything."""
    found = cluster.vms_versioned()
    if everything:
        return found
    if node:
        here = cluster.node(node)
        return [v for v in found if v.value.node == node or v.value.uuid in here.domains]
    by_ref = {v.value.name: v for v in found} | {v.value.uuid: v for v in found}
    unknown = [r for r in refs if r not in by_ref and r.lower() not in by_ref]
    if unknown:
        raise NotFound(f"no VM named {', '.join(repr(r) for r in unknown)}; nothing was "
                       "changed")
    chosen = [by_ref.get(r) or by_ref[r.lower()] for r in refs]
    return list({v.value.uuid: v for v in chosen}.values())   # each VM once, in order


def request(cluster: Cluster, selected: list[Versioned], action: str,
            reason: str = "") -> BatchRequest:
    """Record the action on every selected VM that takes it (see the module's note)."""
    out = BatchRequest(action)
    nodes, busy, plan = cluster.nodes(), cluster.busy(), placement.Plan()
    by_node: dict[str, list[tuple[Versioned, VM]]] = {}
    settled: list[tuple[Versioned, VM]] = []
    for current in selected:
        vm = VM.from_json(current.value.to_json())   # the change goes on a copy
        try:
            where = _decide(cluster, vm, action, nodes, busy, plan)
        except (Conflict, NotFound, Unavailable) as e:
            out.refused[vm.name] = str(e)
            continue
        (by_node.setdefault(where, []) if where else settled).append((current, vm))
    for node, chosen in sorted(by_node.items()):
        for first in range(0, len(chosen), BATCH):
            op = _commit(cluster, chosen[first:first + BATCH], action, node, reason, out)
            if op is not None:
                out.ops.append(op)
    if settled:
        out.settled = _commit(cluster, settled, action, "", reason, out)
    return out


def _decide(cluster: Cluster, vm: VM, action: str, nodes: list[Any], busy: dict[str, str],
            plan: placement.Plan) -> str:
    """The node that must act on vm ("" for none), with vm changed as the action asks."""
    rule = states.vm_action(action, vm.state, vm.name)
    if vm.uuid in busy:
        raise Conflict(f"VM {vm.name} is busy with operation {busy[vm.uuid]}")
    running = [n.name for n in nodes if vm.uuid in n.domains]
    if len(running) > 1:
        raise Conflict(f"VM {vm.name} runs on several nodes ({', '.join(running)}); resolve "
                       "that first")
    if rule.needs_running and not running:
        vm.state = rule.desired   # nothing runs: only its desired state changes
        return ""
    vm.node = lifecycle.acting_node(cluster, vm, rule, running, nodes, plan)
    vm.state = rule.desired
    return vm.node


def _commit(cluster: Cluster, chosen: list[tuple[Versioned, VM]], action: str, node: str,
            reason: str, out: BatchRequest) -> Operation | None:
    """One transaction: the VMs' new records (each if it still has the version read), the
    operation's record and, when a node acts, the VMs' busy markers. A VM that changed
    meanwhile refuses the whole transaction: its VMs are refused, nothing of them changed."""
    op = records.new_operation(
        f"vms.{action}", node or "(no node)", node, node, reason,
        args={"vms": {vm.uuid: vm.name for _, vm in chosen},
              "previous": {vm.uuid: previous(cur.value) for cur, vm in chosen} if node else {}})
    op.progress = {"done": 0 if node else len(chosen), "total": len(chosen)}
    if not node:
        records.mark_done(op, f"{len(chosen)} VMs were not running: their desired state is "
                              f"{states.VM_ACTIONS[action].desired}")
    tx = cluster.store.transaction()
    for cur, vm in chosen:
        tx.set(cluster.schema.vm(vm.uuid), vm.to_json(), cur.version)
        if node:
            tx.create(cluster.schema.vm_operation(vm.uuid), op.id)
    tx.create(cluster.schema.operation(op.id), op.to_json())
    try:
        tx.commit()
    except Unavailable:
        raise
    except PvcError:
        for _, vm in chosen:
            out.refused[vm.name] = (f"VM {vm.name} or another of its batch changed while "
                                    "submitting (another command won); nothing of the batch "
                                    "changed, try again")
        return None
    return op


# ---------------------------------------------------------------------- execution side

def execute(ctx: "NodeFrame", run: Runner) -> str:
    """Act on the batch's VMs on this node. Returns the outcome sentence."""
    assert run.record is not None
    action = run.record.kind.split(".", 1)[1]
    wanted: dict[str, str] = run.record.args.get("vms", {})
    items = run.record.progress.get("items", {})
    todo = [u for u, name in wanted.items() if items.get(name) not in (DONE, FAILED)]
    found = ctx.store.get_json_many(ctx.schema.vm(u) for u in todo)
    vms = {u: VM.from_json(r) for u, r in zip(todo, found) if r}
    count = _Count(len(wanted) - len(todo), len(wanted))
    outcomes = run.record.progress.get("outcomes", {})   # of an earlier, lost attempt
    failures = {n: outcomes.get(n, "failed") for n, st in items.items() if st == FAILED}

    def one(uuid: str) -> None:
        name = wanted[uuid]
        if not run.may_continue():
            return
        vm = vms.get(uuid)
        try:
            if vm is None:
                raise NotFound(f"VM {name} was undefined meanwhile")
            if vm.node != ctx.name and not ctx.hv.is_running(uuid):
                raise Conflict(f"VM {name} is assigned to {vm.node or 'no node'}, not "
                               f"{ctx.name}")
            outcome, state = lifecycle.ACTIONS[action](ctx, vm), DONE
        except (HypervisorError, Conflict, NotFound) as e:
            outcome, state = str(e), FAILED
            failures[name] = outcome
        _release(ctx, uuid, run.op_id)
        run.progress(f"{action}: {name}: {outcome}", done=count.next(), item=name,
                     item_state=state, outcome=outcome)

    with ThreadPoolExecutor(BATCH_PARALLEL, thread_name_prefix=f"vms-{action}") as pool:
        list(pool.map(one, todo))
    ctx.refresh()
    _keep_failures(ctx, vms, failures)
    left = len(wanted) - count.done
    if left and run.cancelled.is_set():
        run.cancelled_with(f"cancelled: {count.done} of {len(wanted)} VMs done, {left} left "
                           "as they were")
        return run.record.message
    if failures:
        named = "; ".join(f"{n}: {e}" for n, e in sorted(failures.items())[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        raise OperationFailed(f"{len(failures)} of {len(wanted)} VMs failed: {named}{more}")
    return f"{action}: {len(wanted)} VMs on {ctx.name}"


class _Count:
    """Done of total, counted from the worker's threads."""

    def __init__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self.done += 1
            return self.done


def _release(ctx: "NodeFrame", uuid: str, op_id: str) -> None:
    """Free one VM of the batch as soon as it is done (the rest stay marked)."""
    path = ctx.schema.vm_operation(uuid)
    try:
        marker = ctx.store.get(path)
        if marker.value.decode() == op_id:
            ctx.store.delete(path, version=marker.version)
    except (NoNode, Conflict):
        pass   # freed or taken meanwhile


def _keep_failures(ctx: "NodeFrame", vms: dict[str, VM], failures: dict[str, str]) -> None:
    """Each VM keeps its last failure (a success clears it): written where it changed."""
    for uuid, vm in vms.items():
        failure = failures.get(vm.name, "")
        if vm.failure != failure:
            lifecycle.record_failure(ctx, uuid, failure)
