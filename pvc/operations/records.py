"""Operation records: the durable history of every operation, and the runner a task uses.

The CLI creates a record (state `queued`) in the same transaction as the change it asks for; the
task that carries it out runs it through `Runner`, which:
  * takes the record's executor lease (an ephemeral znode), so a redelivered copy of the task
    waits for a still-living first copy instead of running beside it;
  * returns early if the record already ended (idempotent redelivery);
  * moves the record through the states of `pvc.states.OP_TRANSITIONS`;
  * publishes progress to the record and to a reporter (the Celery task state).
"""
from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
import time
import uuid as uuidlib
from typing import Any, Callable

from pvc.core import states
from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, NotFound, PvcError
from pvc.core.models import Operation
from pvc.core.store import KEEP, NodeExists, NoNode, Transaction, VersionConflict

log = logging.getLogger(__name__)
Reporter = Callable[[dict[str, Any]], None]
PROGRESS_WRITE_INTERVAL = 0.25   # seconds between progress writes of one operation


def new_id() -> str:
    return uuidlib.uuid4().hex[:12]


def requester() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def new_operation(kind: str, target: str, target_id: str, node: str, task: str,
                  reason: str = "", args: dict[str, Any] | None = None) -> Operation:
    now = time.time()
    return Operation(id=new_id(), kind=kind, target=target, target_id=target_id, node=node,
                     task=task, requested_by=requester(), reason=reason, created=now,
                     args=args or {}, history=[[now, states.OP_QUEUED, "submitted"]])


def mark_done(op: Operation, message: str) -> None:
    """An operation that needs no node: it ends as it is recorded."""
    op.state = states.OP_SUCCEEDED
    op.message = message
    op.finished = op.created
    op.history.append([op.created, states.OP_SUCCEEDED, message])


def queue_for(node: str) -> str:
    return f"pvc.node.{node}"


def _transition(op: dict[str, Any], new_state: str, note: str) -> dict[str, Any]:
    if not states.op_transition(op["state"], new_state):
        raise Conflict(f"operation {op['id']} cannot go from {op['state']} to {new_state}")
    op["state"] = new_state
    op.setdefault("history", []).append([time.time(), new_state, note])
    return op


def marker(cluster: Cluster, op: Operation | dict[str, Any]) -> str:
    """The znode that marks an operation's target busy while it is in flight."""
    kind, target = (op.kind, op.target_id) if isinstance(op, Operation) else \
        (op["kind"], op["target_id"])
    if kind.startswith("vm."):
        return cluster.schema.vm_operation(target)
    return cluster.schema.node_operation(target)


def finish(cluster: Cluster, op_id: str, state: str, message: str = "", error: str = "",
           progress: dict[str, Any] | None = None) -> Operation:
    """End an operation: record the outcome (and the last progress) and free its target, in
    one transaction. An operation that already ended stays as it is."""
    def end(record: dict[str, Any]) -> bool | None:
        if record["state"] in states.OP_TERMINAL:
            return None
        if progress:
            apply_progress(record, progress)
        _transition(record, state, error or message or state)
        record["finished"] = time.time()
        record["message"] = message or record.get("message", "")
        record["error"] = error
        return True

    return _rewrite(cluster, op_id, end)


def cancel(cluster: Cluster, op_id: str) -> Operation:
    """Cancel an operation: at once if it has not started (its task will find it ended);
    a running flush/unflush is asked to stop after the migrations in flight."""
    def stop(record: dict[str, Any]) -> bool:
        state, kind = record["state"], record["kind"]
        if state in states.OP_TERMINAL:
            raise Conflict(f"operation {op_id} already ended ({state})")
        if state == states.OP_RUNNING:
            if kind not in states.OP_CANCEL_WHILE_RUNNING:
                raise Conflict(f"operation {op_id} ({kind}) is already running and cannot be "
                               "cancelled; it ends on its own")
            record["cancel_requested"] = True
            record["history"].append([time.time(), state, f"cancel requested by {requester()}"])
            return False
        _transition(record, states.OP_CANCELLED, f"cancelled by {requester()}")
        record["finished"] = time.time()
        record["message"] = "cancelled before it started"
        return True

    return _rewrite(cluster, op_id, stop)


def _rewrite(cluster: Cluster, op_id: str,
             change: Callable[[dict[str, Any]], bool | None]) -> Operation:
    """Compare-and-set over a record: change() edits it and says whether it ended (its
    target is then freed in the same transaction); None leaves the record as it is."""
    def edit(record: dict[str, Any], tx: Transaction) -> Any:
        ended = change(record)
        if ended is None:
            return KEEP
        busy = marker(cluster, record)
        if ended and cluster.store.get_text(busy) == op_id:
            tx.delete(busy)
        return record

    try:
        written = cluster.store.update(cluster.schema.operation(op_id), edit)
    except NoNode:
        raise NotFound(f"no operation {op_id!r}") from None
    except VersionConflict:
        raise Conflict(f"operation {op_id} kept changing; try again") from None
    return Operation.from_json(written.value)


class Runner:
    """Runs one operation on behalf of a task. Use as a context manager:

        with Runner(cluster, op_id, report) as run:
            if run.record is None: return   # already finished earlier
            ...; run.progress(...); run.succeed("...")
    """

    def __init__(self, cluster: Cluster, op_id: str, report: Reporter | None = None,
                 worker: str = "") -> None:
        self.cluster = cluster
        self.op_id = op_id
        self.report = report or (lambda meta: None)
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.record: Operation | None = None
        self._lease = cluster.schema.operation_executor(op_id)
        self._leased = False
        self.cancelled = threading.Event()   # set when an operator cancels this operation
        self._on_cancel: list[Callable[[], None]] = []
        self._progress_lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._last_write = 0.0

    # -------------------------------------------------------------- lease + begin
    def __enter__(self) -> "Runner":
        self._take_lease()
        record = self.cluster.operation(self.op_id)
        if record.state in states.OP_TERMINAL:
            log.info("operation %s already %s; nothing to do", self.op_id, record.state)
            return self
        self.record = record
        self.set_fields(attempts=record.attempts + 1, worker=self.worker)
        self.cluster.store.watch_data(self.cluster.schema.operation(self.op_id),
                                      self._watch_cancel)
        return self

    def _watch_cancel(self, value: Any, _version: int | None) -> bool:
        if value and (value.get("cancel_requested") or value["state"] == states.OP_CANCELLED):
            if not self.cancelled.is_set():
                self.cancelled.set()
                for fn in self._on_cancel:
                    fn()
        return bool(value) and value["state"] not in states.OP_TERMINAL

    def on_cancel(self, fn: Callable[[], None]) -> None:
        """Call fn when an operator cancels (e.g. to stop waiting for a lock)."""
        self._on_cancel.append(fn)
        if self.cancelled.is_set():
            fn()

    def __exit__(self, _type: Any, exc: BaseException | None, _tb: Any) -> None:
        try:
            if exc is not None and self.record is not None:
                error = str(exc) if isinstance(exc, PvcError) else f"internal error: {exc!r}"
                self.fail(error)
                if not isinstance(exc, PvcError):
                    log.exception("operation %s crashed", self.op_id)
        finally:
            self._drop_lease()

    def _take_lease(self) -> None:
        """Ephemeral, so a crashed executor frees it when its ZooKeeper session ends."""
        store = self.cluster.store
        while True:
            try:
                store.create(self._lease, self.worker, ephemeral=True)
                self._leased = True
                return
            except NodeExists:
                log.info("operation %s is being run by another worker; waiting", self.op_id)
                store.wait_gone(self._lease, timeout=None)
            except NoNode:
                raise Conflict(f"operation {self.op_id} does not exist") from None

    def _drop_lease(self) -> None:
        if self._leased:
            try:
                self.cluster.store.delete(self._lease)
            except PvcError:
                pass  # gone with the session anyway
            self._leased = False

    # -------------------------------------------------------------- state changes
    def set_state(self, state: str, note: str, **fields: Any) -> Operation:
        def change(op: dict[str, Any]) -> dict[str, Any]:
            if op["state"] != state or state == states.OP_RUNNING:
                _transition(op, state, note)
            op["message"] = note
            op.update(fields)
            return op

        data = self.cluster.store.update_json(self.cluster.schema.operation(self.op_id), change)
        self.record = Operation.from_json(data)
        if state == states.OP_WAITING:   # Celery knows "started"; waiting is ours to tell
            self.report({"state": state, "message": note})
        return self.record

    def set_fields(self, **fields: Any) -> Operation:
        """Change record fields without a state transition."""
        def change(op: dict[str, Any]) -> dict[str, Any]:
            op.update(fields)
            return op

        data = self.cluster.store.update_json(self.cluster.schema.operation(self.op_id), change)
        self.record = Operation.from_json(data)
        return self.record

    def running(self, note: str = "started") -> Operation:
        assert self.record is not None
        if self.record.attempts > 1:
            note = f"{note} (attempt {self.record.attempts}, after a lost worker)"
        return self.set_state(states.OP_RUNNING, note, started=self.record.started or time.time())

    def progress(self, message: str, done: int | None = None, total: int | None = None,
                 item: str | None = None, item_state: str | None = None) -> None:
        """Record progress. Writes are coalesced (at most one per PROGRESS_WRITE_INTERVAL), so
        ZooKeeper load stays bounded however many VMs an operation handles; the final state
        is always written by succeed/fail."""
        with self._progress_lock:
            p = self._pending
            p["message"] = message
            if done is not None:
                p["done"] = done
            if total is not None:
                p["total"] = total
            if item is not None:
                p.setdefault("items", {})[item] = item_state or ""
            if time.monotonic() - self._last_write < PROGRESS_WRITE_INTERVAL:
                return
            pending, self._pending = self._pending, {}
            self._last_write = time.monotonic()
        data = self.cluster.store.update_json(self.cluster.schema.operation(self.op_id),
                                              lambda op: apply_progress(op, pending))
        self.report({"state": "PROGRESS", "message": data.get("message", ""),
                     **{k: v for k, v in data.get("progress", {}).items() if k != "items"}})

    def _take_pending(self) -> dict[str, Any]:
        with self._progress_lock:
            pending, self._pending = self._pending, {}
            return pending

    def succeed(self, message: str = "done") -> Operation:
        self.record = finish(self.cluster, self.op_id, states.OP_SUCCEEDED, message=message,
                             progress=self._take_pending())
        return self.record

    def cancelled_with(self, message: str) -> Operation:
        """End as cancelled (the operator asked; what was done is in the message)."""
        self.record = finish(self.cluster, self.op_id, states.OP_CANCELLED, message=message,
                             progress=self._take_pending())
        return self.record

    def fail(self, error: str) -> Operation:
        self.record = finish(self.cluster, self.op_id, states.OP_FAILED, error=error,
                             progress=self._take_pending())
        return self.record


def apply_progress(op: dict[str, Any], pending: dict[str, Any]) -> dict[str, Any]:
    prog = op.setdefault("progress", {})
    for key in ("done", "total"):
        if key in pending:
            prog[key] = pending[key]
    if pending.get("items"):
        prog.setdefault("items", {}).update(pending["items"])
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
