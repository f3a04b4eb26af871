"""A node going down and coming up, as its `pvc-flush.service` runs them (`pvc system shutdown`
at stop, `pvc system boot` at start), bounded so a shutdown never hangs.

Shutdown: flush the node (its VMs move elsewhere) within the node's stop budget; when the flush
fails or overruns, cancel it (it stops after the moves in flight) and park what is left: every
VM still running here is shut down cleanly and marked to start again on this node's unflush.
While the whole cluster goes down (`pvc cluster shutdown`), nothing moves at all: every node
parks its VMs where they are, so they do not hop from node to node ahead of the shutdown, and
each node's unflush at boot starts its own again.

Boot: wait (bounded) until this node's daemon runs and a worker is registered, end the
cluster's shutdown if one was under way, and unflush: the node's VMs come back or start.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from pvc.core import states
from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, OperationFailed, PvcError, Unavailable
from pvc.core.models import Operation
from pvc.core.states import DaemonState, DomainState
from pvc.node import flush
from pvc.operations import records
from pvc.operations.requests import abandon

Send = Callable[[Operation], None]     # puts an operation's task on its node's queue
Say = Callable[[str], None]

PARK_RESERVE_MIN = 30.0   # seconds kept back from the budget for parking, at least


# ---------------------------------------------------------------------- whole-cluster shutdown

def begin_cluster_shutdown(cluster: Cluster, reason: str) -> dict[str, Any]:
    record = {"by": records.requester(), "reason": reason, "since": time.time()}
    cluster.store.put(cluster.schema.cluster_shutdown, record)
    return record


def end_cluster_shutdown(cluster: Cluster) -> bool:
    """False when none was under way."""
    if not cluster.store.exists(cluster.schema.cluster_shutdown):
        return False
    cluster.store.delete(cluster.schema.cluster_shutdown)
    return True


# ---------------------------------------------------------------------- running one operation

def _run(cluster: Cluster, req: Any, send: Send, timeout: float) -> dict[str, Any] | None:
    """Submit a request and wait for its operation to end: the ended record, or None when it
    did not end within timeout."""
    op = req.op
    try:
        send(op)
    except PvcError as e:
        abandon(cluster, op, f"not submitted: {e}")
        raise
    try:
        return cluster.store.wait_for(
            cluster.schema.operation(op.id),
            lambda r: r is not None and r["state"] in states.OP_TERMINAL, max(timeout, 0.1))
    except TimeoutError:
        return None


def _stop_waiting_for(cluster: Cluster, op_id: str, timeout: float) -> dict[str, Any] | None:
    """Cancel an operation that overran (a flush stops after the moves in flight) and wait
    for it to end."""
    if not op_id:
        return None
    try:
        records.cancel(cluster, op_id)
    except PvcError:
        pass   # it ended meanwhile
    try:
        return cluster.store.wait_for(
            cluster.schema.operation(op_id),
            lambda r: r is None or r["state"] in states.OP_TERMINAL, max(timeout, 0.1))
    except TimeoutError:
        return None


# ---------------------------------------------------------------------- shutdown

@dataclass
class Outcome:
    ok: bool
    sentence: str


def shutdown(cluster: Cluster, node: str, budget: float, send: Send, say: Say) -> Outcome:
    """Empty the node within `budget` seconds; what happened, in one sentence."""
    deadline = time.monotonic() + budget
    reserve = max(PARK_RESERVE_MIN, 2 * cluster.config.cluster.operations.shutdown_timeout)
    going_down = cluster.cluster_shutdown()
    if going_down is not None:
        say(f"the whole cluster is going down ({going_down.get('reason') or 'no reason given'}):"
            f" {node}'s VMs are shut down where they are")
        return _park(cluster, node, "the whole cluster is going down", deadline, send)
    say(f"flushing {node} before it stops (at most {max(0.0, budget - reserve):.0f}s, then what "
        "is left is shut down cleanly)")
    try:
        req = flush.request(cluster, node, "flush", "the node is stopping")
    except Conflict as e:   # an operation of the node is in flight: stop it, then park
        say(f"cannot flush {node} now ({e}); shutting its VMs down instead")
        _stop_waiting_for(cluster, _last_flush(cluster, node), deadline - time.monotonic() -
                          reserve)
        return _park(cluster, node, "the node stopped while it was busy", deadline, send)
    record = _run(cluster, req, send, deadline - reserve - time.monotonic())
    if record is not None and record["state"] == states.OpState.SUCCEEDED:
        return Outcome(True, record.get("message", f"flushed {node}"))
    if record is None:
        op_id = _last_flush(cluster, node)
        say("the flush did not finish in time; stopping it after the moves in flight")
        record = _stop_waiting_for(cluster, op_id, deadline - time.monotonic() - reserve / 2) \
            if op_id else None
    why = (record or {}).get("error") or (record or {}).get("message") or "it did not finish"
    say(f"the flush did not empty {node} ({why}); shutting down what is left")
    return _park(cluster, node, "the flush could not move it before the node stopped",
                 deadline, send)


def _last_flush(cluster: Cluster, node: str) -> str:
    return cluster.store.get_text(cluster.schema.node_operation(node)) or ""


def _park(cluster: Cluster, node: str, why: str, deadline: float, send: Send) -> Outcome:
    record = _run(cluster, flush.request(cluster, node, "flush", why, park=why), send,
                  deadline - time.monotonic())
    if record is None:
        return Outcome(False, f"{node} was not emptied within its stop budget")
    if record["state"] != states.OpState.SUCCEEDED:
        return Outcome(False, f"{node} was not emptied: {record.get('error')}")
    return Outcome(True, record.get("message", f"flushed {node}"))


# ---------------------------------------------------------------------- boot

def wait_acting(cluster: Cluster, node: str, timeout: float) -> None:
    """Until the node's daemon runs and a worker of it is registered (pushed by watches)."""
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(deadline - time.monotonic(), 0.1)
    try:
        cluster.store.wait_for(cluster.schema.node_alive(node), lambda v: v is not None,
                               left(), decode=lambda d: d)
        cluster.store.wait_for(cluster.schema.node_field(node, "daemon_state"),
                               lambda v: v == DaemonState.RUN, left(),
                               decode=lambda d: d.decode() if d else None)
        cluster.store.wait_for_children(cluster.schema.node_workers(node), bool, left())
    except TimeoutError:
        raise Unavailable(f"{node}'s daemon and worker were not up within {timeout:g}s "
                          "(systemctl status pvc-node pvc-worker)") from None


def boot(cluster: Cluster, node: str, timeout: float, send: Send, say: Say) -> Outcome:
    """Bring the node back into service: its VMs return or start."""
    wait_acting(cluster, node, timeout)
    if end_cluster_shutdown(cluster):
        say("the whole-cluster shutdown is over: nodes that stop move their VMs again")
    if cluster.node(node).domain_state == DomainState.READY and not _coming_home(cluster, node):
        return Outcome(True, f"{node} is ready; no VM waits for it")
    record = _run(cluster, flush.request(cluster, node, "unflush", "the node started"), send,
                  timeout)
    if record is None:
        raise OperationFailed(f"the unflush of {node} did not finish within {timeout:g}s; it "
                              f"goes on (pvc task show {_last_flush(cluster, node)})")
    if record["state"] != states.OpState.SUCCEEDED:
        return Outcome(False, f"unflush of {node}: {record.get('error')}")
    return Outcome(True, record.get("message", f"unflushed {node}"))


def _coming_home(cluster: Cluster, node: str) -> bool:
    return any(v.last_node == node or (v.node == node and v.autostart
                                       and v.state == states.VmState.STOP)
               for v in cluster.vms())
