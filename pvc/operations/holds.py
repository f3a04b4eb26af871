"""What an operator puts on hold: the whole cluster (maintenance) or one node (cordon).

Maintenance: nothing acts on its own. Node daemons start no VM by themselves (a crashed VM stays
down), the primary fences no node and does not move the database leader, and no primary is
elected while one lives (an election happens only when the primary is dead, as always). What an
operator asks for still runs. A daemon still stops a VM that must not run where it runs: a
second copy of a VM is never left running.

Cordon: no new VM is placed on the node (starts, migrations, flushes elsewhere and fence
recovery choose other nodes); what runs there stays. An unflush of a cordoned node is refused:
it would bring VMs back to it.

Each change is a recorded operation (who, why), like a VM's metadata change.
"""
from __future__ import annotations

import time
from typing import Any

from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, NotFound
from pvc.core.models import Operation
from pvc.core.store import NodeExists, NoNode
from pvc.operations import records


def hold(reason: str) -> dict[str, Any]:
    return {"by": records.requester(), "reason": reason, "since": round(time.time(), 3)}


def describe(held: dict[str, Any]) -> str:
    """'by root@host since 2026-12-01 10:00:00 UTC: reason'"""
    since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(held.get("since", 0)))
    why = f": {held['reason']}" if held.get("reason") else ""
    return f"by {held.get('by', '?')} since {since}{why}"


# ---------------------------------------------------------------------- maintenance

def maintenance_on(cluster: Cluster, reason: str = "") -> Operation:
    held = hold(reason)
    op = records.recorded("cluster.maintenance", "cluster", "cluster", reason,
                          "maintenance on", {"before": {"maintenance": False},
                                             "after": {"maintenance": True}})
    def already() -> Conflict:
        current = cluster.maintenance() or {}
        return Conflict(f"the cluster is already in maintenance ({describe(current)})")

    tx = cluster.store.transaction()
    tx.create(cluster.schema.maintenance, held, refuse={NodeExists: already})
    tx.create(cluster.schema.operation(op.id), op.to_json())
    tx.commit()
    return op


def maintenance_off(cluster: Cluster, reason: str = "") -> Operation:
    current = cluster.maintenance()
    if current is None:
        raise Conflict("the cluster is not in maintenance")
    op = records.recorded("cluster.maintenance", "cluster", "cluster", reason,
                          "maintenance off", {"before": {"maintenance": True, **current},
                                              "after": {"maintenance": False}})
    tx = cluster.store.transaction()
    tx.delete(cluster.schema.maintenance, refuse={NoNode: Conflict(
        "the cluster is not in maintenance (turned off meanwhile)")})
    tx.create(cluster.schema.operation(op.id), op.to_json())
    tx.commit()
    return op


def queued_operations(cluster: Cluster) -> list[Operation]:
    """Operations not yet ended: they run once maintenance is off (worth a second look)."""
    from pvc.core.states import OP_TERMINAL
    return [o for o in cluster.operations() if o.state not in OP_TERMINAL]


# ---------------------------------------------------------------------- cordon

def cordon(cluster: Cluster, name: str, reason: str = "") -> Operation:
    return _set_cordon(cluster, name, hold(reason), reason)


def uncordon(cluster: Cluster, name: str, reason: str = "") -> Operation:
    return _set_cordon(cluster, name, {}, reason)


def _set_cordon(cluster: Cluster, name: str, held: dict[str, Any], reason: str) -> Operation:
    node = cluster.node(name)
    if bool(node.cordon) == bool(held):
        state = f"cordoned ({describe(node.cordon)})" if node.cordon else "not cordoned"
        raise Conflict(f"node {name} is already {state}")
    kind = "node.cordon" if held else "node.uncordon"
    message = (f"{name} cordoned: no new VMs are placed there" if held else
               f"{name} uncordoned: it takes VMs again")
    op = records.recorded(kind, name, name, reason, message,
                          {"before": {"cordon": node.cordon}, "after": {"cordon": held}})
    path = cluster.schema.node_field(name, "cordon")
    tx = cluster.store.transaction()
    if cluster.store.exists(path):
        tx.set(path, held)
    else:
        tx.create(path, held)
    tx.create(cluster.schema.operation(op.id), op.to_json())
    changed = NotFound(f"node {name} changed meanwhile; nothing was changed, try again")
    tx.commit(refuse={NoNode: changed, NodeExists: changed})
    return op
