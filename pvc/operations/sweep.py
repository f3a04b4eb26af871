"""The primary coordinator's sweeps: what nobody else will finish.

ZooKeeper's record is the truth; the broker can lose a message (Redis restarted without the
message on disk) and an executor can die between attempts with no copy left to redeliver. Each
sweep is a duty of the primary's keepalive and returns what it did as a sentence ("" if
nothing).

  * stale claims: a VM or node marked busy by an operation that has ended (or is gone) is
    freed. Claims of live executors are ephemeral and free themselves; this catches the rest.
  * lost operations: an operation queued, or running with no live executor, for longer than
    `lost_after` while the broker holds no message for it is sent again (tasks are
    idempotent); after `max_resends` it fails, saying why.
"""
from __future__ import annotations

import logging
import time
from typing import Protocol

from pvc.core import states
from pvc.core.cluster import Cluster
from pvc.core.models import Operation
from pvc.core.store import NoNode, VersionConflict
from pvc.operations import records

log = logging.getLogger(__name__)


class Broker(Protocol):
    """What the sweep needs from the message broker (tasks/broker.py implements it)."""

    def holds(self, op: Operation) -> bool:
        """True if a message for op waits in its queue or is delivered and not acknowledged."""

    def send(self, op: Operation) -> None:
        """Send op's task to its node's queue again."""


def stale_claims(cluster: Cluster) -> str:
    """Free markers whose operation has ended or no longer exists."""
    schema, store = cluster.schema, cluster.store
    freed = []
    for parent, path_of in ((schema.vm_operations, schema.vm_operation),
                            (schema.node_operations, schema.node_operation),
                            (schema.volume_operations, schema.volume_operation)):
        for key in store.children(parent):
            path = path_of(key)
            try:
                marker = store.get(path)
            except NoNode:
                continue
            op_id = marker.value.decode()
            record = store.get_json(schema.operation(op_id), None)
            if record is not None and record["state"] not in states.OP_TERMINAL:
                continue
            try:
                store.delete(path, version=marker.version)
                freed.append(f"{key} (operation {op_id} "
                             f"{record['state'] if record else 'gone'})")
            except (NoNode, VersionConflict):
                pass   # freed or taken again meanwhile
    return f"freed {len(freed)} stale claims: {', '.join(freed)}" if freed else ""


def lost_operations(cluster: Cluster, broker: Broker, lost_after: float,
                    max_resends: int, now: float | None = None) -> str:
    """Send again (or fail) operations that wait with no message behind them."""
    now = time.time() if now is None else now
    said = []
    for op in cluster.operations():
        if not _waits_for_nothing(cluster, op, lost_after, now) or broker.holds(op):
            continue
        if op.resends >= max_resends:
            records.finish(cluster, op.id, states.OpState.FAILED,
                           error=f"lost: no message in the broker after {op.resends} "
                                 "re-sends", restore=op.state == states.OpState.QUEUED)
            said.append(f"{op.id} failed (lost {op.resends + 1} times)")
            continue
        _note_resend(cluster, op)
        broker.send(op)
        said.append(f"{op.id} ({op.kind} {op.target}) re-sent to {op.node}")
    return "lost operations: " + "; ".join(said) if said else ""


def _waits_for_nothing(cluster: Cluster, op: Operation, lost_after: float, now: float) -> bool:
    """Queued, or running/waiting with no executor, since longer than lost_after."""
    if op.state in states.OP_TERMINAL:
        return False
    last_change = max([op.created] + [h[0] for h in op.history])
    if now - last_change < lost_after:
        return False
    if op.state == states.OpState.QUEUED:
        return True
    return not cluster.store.exists(cluster.schema.operation_executor(op.id))


def _note_resend(cluster: Cluster, op: Operation) -> None:
    def note(record: dict) -> dict:
        record["resends"] = record.get("resends", 0) + 1
        record["history"].append([time.time(), record["state"],
                                  "re-sent by the primary: the broker held no message for it"])
        return record

    cluster.store.update_json(cluster.schema.operation(op.id), note)
