"""Switchover: `pvc node primary NODE` (and `secondary`), an operation like every other, run
by the new primary's worker. It starts the handoff (pvc.coordinator.role), follows its phases
into the operation record, moves the database leader meanwhile (from the moment the old
primary's services have stopped; its result is the primary-taken → database-moved step),
and ends when the new primary serves. And `db.switchover`: the database leader follows the primary.
"""
from __future__ import annotations

import queue
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pvc.coordinator.database import patroni_for
from pvc.coordinator.patroni import PatroniError
from pvc.coordinator.role import HANDOFF_STALE, Phase, advance
from pvc.core import counters, names
from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.core.errors import Conflict, InvalidInput, OperationFailed, PvcError
from pvc.core.states import DaemonState
from pvc.core.store import NodeExists
from pvc.operations import records
from pvc.operations.requests import Request, require_acting
from pvc.operations.runner import Runner

WAIT_MARGIN = 15.0   # seconds beyond the stall bound an operation waits for the next phase

if TYPE_CHECKING:
    from pvc.operations.frame import NodeFrame


# ---------------------------------------------------------------------- request side

def request(cluster: Cluster, target: str, reason: str = "") -> Request:
    """Make `target` the primary coordinator."""
    coordinators = cluster.config.cluster.coordinators
    node = cluster.node(names.check("node", target))
    if target not in coordinators:
        raise InvalidInput(f"{target} is not a coordinator (coordinators: "
                           f"{', '.join(coordinators) or 'none configured'})")
    require_acting(node, "become the primary")
    handoff = cluster.store.get_json(cluster.schema.handoff, None)
    if handoff:
        raise Conflict(f"a switchover is already in progress (operation {handoff.get('op')}, "
                       f"{handoff.get('from')} → {handoff.get('to')}, at {handoff.get('phase')})")
    return _record(cluster, "node.primary", target, reason)


def request_secondary(cluster: Cluster, node_name: str, reason: str = "") -> Request:
    """Hand the primary role from node_name to another coordinator that runs."""
    names.check("node", node_name)
    holder = cluster.store.get_text(cluster.schema.primary)
    if holder != node_name:
        raise Conflict(f"{node_name} is not the primary (the primary is {holder or 'nobody'})")
    nodes = {n.name: n for n in cluster.nodes()}
    other = next((c for c in cluster.config.cluster.coordinators
                  if c != node_name and c in nodes and nodes[c].daemon_state == DaemonState.RUN
                  and nodes[c].workers), None)
    if other is None:
        raise Conflict(f"no other coordinator runs: {node_name} stays the primary")
    return request(cluster, other, reason or f"{node_name} steps down")


def _record(cluster: Cluster, kind: str, target: str, reason: str) -> Request:
    op = records.new_operation(kind, target, target, target, reason)
    records.record_node_operation(cluster, op)
    return Request(op, submit=True)


# ---------------------------------------------------------------------- execution

def execute(ctx: "NodeFrame", run: Runner) -> str:
    """The new primary's worker carries out the handoff."""
    assert run.record is not None
    target = run.record.target_id
    holder = ctx.store.get_text(ctx.schema.primary)
    if holder == target and not ctx.store.exists(ctx.schema.handoff):
        return f"{target} is already the primary; " + follow_database(ctx.config, ctx.cluster,
                                                                      target)
    _start_handoff(ctx.cluster, run.op_id, holder or "", target)
    phases = _PhaseWatch(ctx.cluster)
    moving = ThreadPoolExecutor(1, thread_name_prefix="database-switchover")
    try:
        # The database moves while the floating IP does (its order, with the ARP wait,
        # is the seed's; the database need not wait for it): once the old primary's
        # services, the aggregator among them, have stopped writing.
        phases.until(Phase.SERVICES_STOPPED, run)
        database = moving.submit(follow_database, ctx.config, ctx.cluster, target,
                                 run.progress)
        phases.until(Phase.PRIMARY_TAKEN, run)
        advance(ctx.cluster, Phase.PRIMARY_TAKEN, database.result())
        phases.until(Phase.DONE, run)
    except PvcError:
        _abandon(ctx.cluster, run.op_id)
        counters.count(ctx.cluster, "switchovers", {"result": "failed"})
        raise
    finally:
        moving.shutdown(wait=True)
        phases.close()
    _finish_handoff(ctx.cluster, run.op_id)
    counters.count(ctx.cluster, "switchovers", {"result": "done"})
    return f"{target} is the primary (was {holder or 'nobody'}); {database.result()}"


def _start_handoff(cluster: Cluster, op_id: str, old: str, new: str) -> None:
    """Create the handoff (a redelivered task finds its own and goes on)."""
    now = time.time()
    record = {"op": op_id, "from": old, "to": new, "phase": Phase.REQUESTED, "changed": now,
              "history": [[now, Phase.REQUESTED, f"switchover {old or 'nobody'} → {new}"]]}
    if not old:   # nobody holds the role: the target only has to take it
        record["phase"] = Phase.RELEASED
    try:
        cluster.store.create(cluster.schema.handoff, record)
    except NodeExists:
        current = cluster.store.get_json(cluster.schema.handoff, None) or {}
        if current.get("op") != op_id:
            raise Conflict(f"another switchover is in progress (operation "
                           f"{current.get('op')})") from None


def _finish_handoff(cluster: Cluster, op_id: str) -> None:
    current = cluster.store.get_json(cluster.schema.handoff, None)
    if current and current.get("op") == op_id:
        cluster.store.delete(cluster.schema.handoff)


def _abandon(cluster: Cluster, op_id: str) -> None:
    try:
        _finish_handoff(cluster, op_id)
    except PvcError:
        pass   # the daemons abandon a stalled handoff themselves


class _PhaseWatch:
    """The handoff's phases as they change (pushed by a watch), into the operation record."""

    def __init__(self, cluster: Cluster) -> None:
        self.updates: "queue.Queue[dict[str, Any] | None]" = queue.Queue()
        self.done = False
        self.seen: list[Any] = []    # handoff history already noted in the record
        cluster.store.watch_data(cluster.schema.handoff, self._changed)

    def _changed(self, value: Any, _version: int | None) -> bool:
        self.updates.put(value)
        return not self.done

    def until(self, phase: Phase, run: Runner) -> None:
        order = list(Phase)
        deadline = time.monotonic() + HANDOFF_STALE + WAIT_MARGIN
        while True:
            try:
                record = self.updates.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise OperationFailed(f"the switchover stalled (waited "
                                      f"{HANDOFF_STALE + WAIT_MARGIN:g}s for {phase})") from None
            if record is None:
                raise OperationFailed("the switchover was abandoned (a coordinator stopped "
                                      "taking part)")
            current = Phase(record["phase"])
            for _ts, step, note in record.get("history", [])[len(self.seen):]:
                run.note(f"switchover: {step}" + (f" ({note})" if note else ""))
            self.seen = record.get("history", [])
            if order.index(current) >= order.index(phase):
                return

    def close(self) -> None:
        self.done = True


# ---------------------------------------------------------------------- the database

def follow_database(config: Config, cluster: Cluster, primary: str,
                    progress: Any = lambda _m: None) -> str:
    """Move the database leader to the primary's member; a sentence either way. Done once
    the new leader serves (the former one rejoins as a replica meanwhile; `cluster status`
    shows it until it streams). A failure does not undo the switchover: it is said, shown
    as degraded, and retried by the primary."""
    patroni = patroni_for(config, cluster.nodes())
    if patroni is None:
        return "no database configured"
    try:
        return patroni.switchover(primary, progress=progress, wait_former=False)
    except PvcError as e:
        return f"database leader not moved: {e}"


def execute_db(ctx: "NodeFrame", run: Runner) -> str:
    """`db.switchover`: the database leader follows the primary (this node)."""
    assert run.record is not None
    patroni = patroni_for(ctx.config, ctx.cluster.nodes())
    if patroni is None:
        return "no database configured"
    try:
        return patroni.switchover(run.record.target_id, progress=run.progress)
    except PatroniError as e:
        raise OperationFailed(str(e)) from None


def database_follows(cluster: Cluster, config: Config, me: str) -> Request | None:
    """The primary's duty: if the database leads elsewhere and this node's member is healthy,
    ask for a `db.switchover` (None when nothing is to do or one is in flight)."""
    patroni = patroni_for(config, cluster.nodes())
    if patroni is None or cluster.maintenance() is not None:   # nothing acts on its own
        return None
    view = patroni.cluster()
    mine = view.member(me)
    if view.leader == me or mine is None or not mine.healthy:
        return None
    if cluster.store.exists(cluster.schema.node_operation(me)):
        return None
    return _record(cluster, "db.switchover", me, "the database leader follows the primary")
