"""The request side that every operation shares.

A request validates (no I/O), checks preconditions (read only), then records the operation and
the change it asks for in one transaction. The caller submits the task to the queue the
operation names (`op.task` on `pvc.node.<op.node>`), or calls `abandon` when it could not.
A refusal before the transaction changes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

from pvc.core import states
from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, NotFound, Unavailable
from pvc.core.models import VM, Node, Operation
from pvc.core.store import NoNode
from pvc.operations import records


@dataclass
class Request:
    op: Operation
    submit: bool        # False: nothing for a node to do, the record is already finished


def require_acting(node: Node, what: str) -> None:
    """The node whose queue gets the task must be able to run it now; otherwise say so
    instead of leaving an operation queued where nobody reads."""
    why = node.acting_refusal()
    if why:
        raise Unavailable(f"node {node.name} {why}: it cannot {what}")


def refuse_if_busy(cluster: Cluster, vm: VM) -> None:
    busy = cluster.vm_operation(vm.uuid)
    if busy:
        raise Conflict(f"VM {vm.name} is busy with operation {busy} "
                       f"(see: pvc task show {busy})")


def previous(vm: VM) -> dict[str, str]:
    """What `abandon` restores if the request cannot be submitted."""
    return {"state": vm.state, "node": vm.node, "last_node": vm.last_node}


def commit_vm(cluster: Cluster, vm: VM, version: int, op: Operation, busy: bool) -> None:
    """One transaction: the VM's new desired record (if it still has `version`), the
    operation record, and the busy marker when a node has work to do."""
    tx = cluster.store.transaction()
    tx.set(cluster.schema.vm(vm.uuid), vm.to_json(), version)
    tx.create(cluster.schema.operation(op.id), op.to_json())
    if busy:
        tx.create(cluster.schema.vm_operation(vm.uuid), op.id)
    tx.commit(refuse={
        NoNode: NotFound(f"VM {vm.name} was undefined meanwhile; nothing was changed"),
        Conflict: Conflict(f"VM {vm.name} changed while submitting (another command won); "
                           "nothing was changed, try again")})


def abandon(cluster: Cluster, op: Operation, error: str) -> None:
    """The task could not be submitted: put back what the request changed, fail the record."""
    records.finish(cluster, op.id, states.OpState.FAILED, error=error, restore=True)
