"""Operation records: the durable history of every operation.

The request side creates a record (state `queued`) in the same transaction as the change it
asks for; the executing task moves it through `pvc.core.states.OP_TRANSITIONS` (see
`pvc.operations.runner`); `finish` and `cancel` end it and free its target in one transaction.
"""
from __future__ import annotations

import getpass
import logging
import os
import socket
import time
import uuid as uuidlib
from typing import Any, Callable

from pvc.core import counters, names, states
from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, NotFound
from pvc.core.models import Operation
from pvc.core.store import KEEP, NodeExists, NoNode, Transaction, VersionConflict
from pvc.operations import registry

log = logging.getLogger(__name__)


def new_id() -> str:
    return uuidlib.uuid4().hex[:12]


def requester() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def new_operation(kind: str, target: str, target_id: str, node: str, reason: str = "",
                  args: dict[str, Any] | None = None) -> Operation:
    """A new record, queued for `node`'s worker with the task the registry names."""
    now = time.time()
    return Operation(id=new_id(), kind=kind, target=target, target_id=target_id, node=node,
                     task=registry.task_of(kind), requested_by=requester(), reason=reason,
                     created=now, args=args or {},
                     history=[[now, states.OpState.QUEUED, "submitted"]])


def mark_done(op: Operation, message: str) -> None:
    """An operation that needs no node: it ends as it is recorded."""
    op.state = states.OpState.SUCCEEDED
    op.message = message
    op.finished = op.created
    op.history.append([op.created, states.OpState.SUCCEEDED, message])


def recorded(kind: str, target: str, target_id: str, reason: str, message: str,
             args: dict[str, Any]) -> Operation:
    """The record of a change no node needs to carry out (registry.RECORDED), ended as made;
    args keep what it changed (before, after)."""
    assert kind in registry.RECORDED, kind
    op = new_operation(kind, target, target_id, "", reason, args)
    mark_done(op, message)
    return op


def transition(op: dict[str, Any], new_state: str, note: str) -> dict[str, Any]:
    if not states.op_transition(op["state"], new_state):
        raise Conflict(f"operation {op['id']} cannot go from {op['state']} to {new_state}")
    op["state"] = new_state
    op.setdefault("history", []).append([time.time(), new_state, note])
    return op


def markers(cluster: Cluster, op: Operation | dict[str, Any]) -> list[str]:
    """The znodes that mark an operation's targets busy while it is in flight: its VM, volume
    or node; each VM of a batch (`vms.*`, args["vms"]: uuid -> name)."""
    record = op.to_json() if isinstance(op, Operation) else op
    target = record["kind"].split(".", 1)[0]
    if target == "vms":
        return [cluster.schema.vm_operation(u) for u in record.get("args", {}).get("vms", {})]
    path_of = {"vm": cluster.schema.vm_operation,
               "volume": cluster.schema.volume_operation}.get(target,
                                                              cluster.schema.node_operation)
    return [path_of(record["target_id"])]


def finish(cluster: Cluster, op_id: str, state: str, message: str = "", error: str = "",
           progress: dict[str, Any] | None = None, restore: bool = False) -> Operation:
    """End an operation: record the outcome (and the last progress) and free its target, in
    one transaction. An operation that already ended stays as it is. restore: it never ran,
    so put back the VM's desired state it changed (in the same transaction)."""
    ended: list[float] = []   # set by the attempt that ended it

    def end(record: dict[str, Any], tx: Transaction) -> bool | None:
        ended.clear()
        if record["state"] in states.OP_TERMINAL:
            return None
        if progress:
            apply_progress(record, progress)
        transition(record, state, error or message or state)
        record["finished"] = time.time()
        record["message"] = message or record.get("message", "")
        record["error"] = error
        if restore:
            _restore_vms(cluster, record, tx)
        ended.append(record["finished"] - record.get("created", record["finished"]))
        return True

    op = _rewrite(cluster, op_id, end)
    if ended:
        counters.observe(cluster, "operation_seconds", {"kind": op.kind, "state": op.state},
                         max(0.0, ended[0]))
    return op


def cancel(cluster: Cluster, op_id: str) -> Operation:
    """Cancel an operation: at once if it has not started (its task will find it ended);
    a running flush/unflush is asked to stop after the migrations in flight."""
    def stop(record: dict[str, Any], tx: Transaction) -> bool:
        state, kind = record["state"], record["kind"]
        if state in states.OP_TERMINAL:
            raise Conflict(f"operation {op_id} already ended ({state})")
        if state == states.OpState.RUNNING:
            if kind not in states.OP_CANCEL_WHILE_RUNNING:
                raise Conflict(f"operation {op_id} ({kind}) is already running and cannot be "
                               "cancelled; it ends on its own")
            record["cancel_requested"] = True
            record["history"].append([time.time(), state, f"cancel requested by {requester()}"])
            return False
        transition(record, states.OpState.CANCELLED, f"cancelled by {requester()}")
        record["finished"] = time.time()
        record["message"] = "cancelled before it started"
        _restore_vms(cluster, record, tx)
        return True

    return _rewrite(cluster, op_id, stop)


def _restore_vms(cluster: Cluster, record: dict[str, Any], tx: Transaction) -> None:
    """Add to tx: each VM's desired state as it was before this (never run) operation: its
    VM's, or every VM's of a batch (compare-and-set on the versions read here)."""
    kind, args = record["kind"], record.get("args", {})
    if kind.startswith("vm."):
        before = {record["target_id"]: args.get("previous")}
    elif kind.startswith("vms."):
        before = dict(args.get("previous", {}))
    else:
        return
    uuids = [u for u, prev in before.items() if prev]
    found = cluster.store.get_json_many_versioned(cluster.schema.vm(u) for u in uuids)
    for uuid, current in zip(uuids, found):
        if current is None:
            continue   # undefined meanwhile: nothing to restore
        vm = dict(current.value)
        vm.update({k: before[uuid][k] for k in ("state", "node", "last_node")
                   if k in before[uuid]})
        tx.set(cluster.schema.vm(uuid), vm, current.version)


def _rewrite(cluster: Cluster, op_id: str,
             change: Callable[[dict[str, Any], Transaction], bool | None]) -> Operation:
    """Compare-and-set over a record: change() edits it and says whether it ended (its
    target is then freed in the same transaction); None leaves the record as it is."""
    names.check("operation", op_id, names.OPERATION_ID)   # '', '..': never a znode path

    def edit(record: dict[str, Any], tx: Transaction) -> Any:
        ended = change(record, tx)
        if ended is None:
            return KEEP
        if ended:
            busy = markers(cluster, record)
            for path, holder in zip(busy, cluster.store.get_many(busy)):
                if holder is not None and holder.decode() == op_id:
                    tx.delete(path)
        return record

    try:
        written = cluster.store.update(cluster.schema.operation(op_id), edit)
    except NoNode:
        raise NotFound(f"no operation {op_id!r}") from None
    except VersionConflict:
        raise Conflict(f"operation {op_id} kept changing; try again") from None
    return Operation.from_json(written.value)


def apply_progress(op: dict[str, Any], pending: dict[str, Any]) -> dict[str, Any]:
    prog = op.setdefault("progress", {})
    for key in ("done", "total"):
        if key in pending:
            prog[key] = pending[key]
    for key in ("items", "outcomes"):
        if pending.get(key):
            prog.setdefault(key, {}).update(pending[key])
    if "message" in pending:
        op["message"] = pending["message"]
    return op


def prune(cluster: Cluster, keep: int) -> int:
    """Delete the oldest ended records beyond `keep`. Returns how many were deleted."""
    ids = cluster.store.children(cluster.schema.operations)
    if len(ids) <= keep:
        return 0
    ops = sorted(cluster.operations(), key=lambda o: o.created)
    removable = [o for o in ops if o.state in states.OP_TERMINAL][: len(ids) - keep]
    for op in removable:
        try:
            cluster.store.delete(cluster.schema.operation(op.id), recursive=True)
        except NoNode:
            pass
    return len(removable)


def record_node_operation(cluster: Cluster, op: Operation) -> None:
    """Store a node operation's record and mark its node busy, in one transaction (one
    operation in flight per node)."""
    busy = cluster.schema.node_operation(op.target_id)

    def in_flight() -> Conflict:
        other = cluster.store.get_text(busy)
        return Conflict(f"node {op.target_id} already has operation {other} in flight "
                        f"(see: pvc task show {other})")

    tx = cluster.store.transaction()
    tx.create(cluster.schema.operation(op.id), op.to_json())
    tx.create(busy, op.id, refuse={NodeExists: in_flight})
    tx.commit()
