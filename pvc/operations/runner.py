"""The runner a task uses to carry out one operation.

`Runner`:
  * takes the record's executor lease (an ephemeral znode), so a redelivered copy of the task
    waits for a still-living first copy instead of running beside it;
  * returns early if the record already ended (idempotent redelivery);
  * claims the VMs it changes (ephemeral markers: they go with this executor's session, so a
    dead executor never leaves a VM busy, and a redelivered attempt re-takes them);
  * follows its ZooKeeper session: while it is suspended no new work starts; when it expired,
    the lease and claims are re-created on the new session, or the runner stops acting
    (`may_continue`);
  * moves the record through the states of `pvc.core.states.OP_TRANSITIONS`;
  * publishes progress to the record and to a reporter (the Celery task state).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable

from pvc.core import states
from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, PvcError
from pvc.core.models import VM, Operation
from pvc.core.store import (
    KEEP,
    NodeExists,
    NoNode,
    SessionEvent,
    Transaction,
    VersionConflict,
    store_error,
)
from pvc.operations.records import apply_progress, finish, transition
from pvc.operations.registry import Reporter

log = logging.getLogger(__name__)
PROGRESS_WRITE_INTERVAL = 0.25   # seconds between progress writes of one operation


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
        self._trailing: threading.Timer | None = None   # writes what a burst left pending
        self.claims: dict[str, str] = {}           # VM uuid -> name, claimed by this run
        self._claims_lock = threading.Lock()
        self.connected = threading.Event()          # the session is up (not suspended)
        self.connected.set()
        self.session_lost = threading.Event()       # it expired: ephemerals were lost meanwhile
        self.superseded = threading.Event()         # another executor took the lease meanwhile
        self._unlisten: Callable[[], None] = lambda: None

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
        self._unlisten = self.cluster.store.on_session(self._on_session)
        return self

    def _watch_cancel(self, value: Any, _version: int | None) -> bool:
        if value and (value.get("cancel_requested") or value["state"] == states.OpState.CANCELLED):
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
            if isinstance(exc, (SystemExit, KeyboardInterrupt)) and self.record is not None:
                self.record = finish(self.cluster, self.op_id, states.OpState.TERMINATED,
                                     error="terminated by a signal to its worker while it "
                                           "ran; what it held is released",
                                     progress=self._take_pending())
            elif exc is not None and self.record is not None:
                error = str(exc) if isinstance(exc, PvcError) else f"internal error: {exc!r}"
                self.fail(error)
                if not isinstance(exc, PvcError):
                    log.exception("operation %s crashed", self.op_id)
        finally:
            self._unlisten()
            self.release_claims()
            self._drop_lease()

    # -------------------------------------------------------------- the session
    def _on_session(self, event: SessionEvent) -> None:
        if event == SessionEvent.SUSPENDED:
            self.connected.clear()
        elif event == SessionEvent.RECONNECTED:
            self.connected.set()
        elif event == SessionEvent.EXPIRED:
            self.connected.clear()
            self.session_lost.set()
        elif event == SessionEvent.NEW_SESSION:
            self._retake()
            self.connected.set()

    def _retake(self) -> None:
        """On a new session: the lease and the claims were ephemeral; take them again, or
        stop acting if another executor has them now."""
        try:
            self._create_again(self._lease, self.worker)
        except NodeExists:
            log.warning("operation %s: another executor took over after the session loss",
                        self.op_id)
            self.superseded.set()
            return
        except PvcError as e:
            log.warning("operation %s: could not take the lease again: %s", self.op_id, e)
            self.superseded.set()
            return
        with self._claims_lock:
            held = dict(self.claims)
        for uuid, name in held.items():
            try:
                self._create_again(self.cluster.schema.vm_operation(uuid), self.op_id)
            except NodeExists:
                log.warning("operation %s: %s was claimed by another operation meanwhile",
                            self.op_id, name)
                with self._claims_lock:
                    self.claims.pop(uuid, None)
            except PvcError as e:
                log.warning("operation %s: could not claim %s again: %s", self.op_id, name, e)

    def _create_again(self, path: str, value: str) -> None:
        """Create an ephemeral znode this run held on its expired session. The servers
        delete an expired session's znodes, but may do so after the client is back on a new
        one: a znode with this run's content that the new session does not own is the old
        one, soon gone (bounded by a session timeout); anything else is NodeExists."""
        store = self.cluster.store
        try:
            store.create(path, value, ephemeral=True)
            return
        except NodeExists:
            try:
                old = store.get(path)
            except NoNode:
                old = None   # gone meanwhile
            if old is not None and (old.value != value.encode() or
                                    old.owner == store.session_id):
                raise
        try:
            store.wait_gone(path, self.cluster.config.cluster.zookeeper.session_timeout)
        except TimeoutError:
            raise store_error(NodeExists, path) from None
        store.create(path, value, ephemeral=True)

    def may_continue(self, holds_lock: bool = False) -> bool:
        """May new work start now? Waits while the session is suspended (at most its
        timeout); False once cancelled, superseded, or (for an operation holding a lock
        that went with the session) once the session expired."""
        if self.cancelled.is_set() or self.superseded.is_set():
            return False
        if holds_lock and self.session_lost.is_set():
            return False
        self.connected.wait(self.cluster.config.cluster.zookeeper.session_timeout)
        return not (self.superseded.is_set() or (holds_lock and self.session_lost.is_set()))

    # -------------------------------------------------------------- claims
    def claim(self, uuid: str, name: str, change: Callable[[VM], None] | None = None,
              on_wait: Callable[[str], None] | None = None) -> VM:
        """Mark VM `uuid` busy with this operation and apply change to its record, in one
        transaction. The claim is ephemeral: it goes with this executor's session. Waits
        (bounded by the migration timeout) for another operation on the VM to end first."""
        store, schema = self.cluster.store, self.cluster.schema
        marker = schema.vm_operation(uuid)

        def claimed(data: dict[str, Any], tx: Transaction) -> dict[str, Any]:
            holder = store.get_text(marker)
            if holder not in (None, self.op_id):
                raise _Busy(holder or "")
            if holder is None:
                tx.create(marker, self.op_id, ephemeral=True)   # fails if taken meanwhile
            fresh = VM.from_json(data)
            if change is not None:
                change(fresh)
            return fresh.to_json()

        while True:
            try:
                vm = VM.from_json(store.update(schema.vm(uuid), claimed).value)
                with self._claims_lock:
                    self.claims[uuid] = name
                return vm
            except _Busy as busy:
                if on_wait:
                    on_wait(busy.holder)
                try:
                    store.wait_gone(marker, self.cluster.config.cluster.migration.timeout)
                except TimeoutError:
                    raise Conflict(f"{name} stayed busy with operation {busy.holder}") from None
            except VersionConflict:
                raise Conflict(f"{name} kept changing; could not claim it") from None

    def release_claims(self) -> None:
        """Free every VM this operation holds, also those an earlier attempt (a worker that
        died) claimed. A failure here is left to the primary's sweep of stale claims."""
        try:
            self.cluster.release_vms_of(self.op_id)
            with self._claims_lock:
                self.claims.clear()
        except PvcError as e:
            log.warning("operation %s: could not release its claims (%s); the primary "
                        "coordinator sweeps them", self.op_id, e)

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
            if op["state"] != state or state == states.OpState.RUNNING:
                transition(op, state, note)
            op["message"] = note
            op.update(fields)
            return op

        data = self.cluster.store.update_json(self.cluster.schema.operation(self.op_id), change)
        self.record = Operation.from_json(data)
        if state == states.OpState.WAITING:   # Celery knows "started"; waiting is ours to tell
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

    def note(self, text: str, at: float | None = None) -> None:
        """A step worth keeping in the record's history (e.g. each phase of a switchover).
        at: when it happened, if that was before now (a write that waited for the store)."""
        when = time.time() if at is None else at

        def add(op: dict[str, Any]) -> dict[str, Any]:
            op["history"].append([when, op["state"], text])
            op["message"] = text
            return op

        self.record = Operation.from_json(self.cluster.store.update_json(
            self.cluster.schema.operation(self.op_id), add))
        self.report({"state": "PROGRESS", "message": text})

    def running(self, note: str = "started") -> Operation:
        assert self.record is not None
        if self.record.attempts > 1:
            note = f"{note} (attempt {self.record.attempts}, after a lost worker)"
        return self.set_state(states.OpState.RUNNING, note, started=self.record.started or time.time())

    def progress(self, message: str, done: int | None = None, total: int | None = None,
                 item: str | None = None, item_state: str | None = None,
                 outcome: str | None = None) -> None:
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
                if outcome is not None:
                    p.setdefault("outcomes", {})[item] = str(outcome)
            since = time.monotonic() - self._last_write
            if since < PROGRESS_WRITE_INTERVAL:
                # the last of a burst is written when the interval is up, so a long step
                # (one migration) shows as what it is, not as what came before it
                if self._trailing is None:
                    self._trailing = threading.Timer(PROGRESS_WRITE_INTERVAL - since,
                                                     self._write_pending)
                    self._trailing.daemon = True
                    self._trailing.start()
                return
        self._write_pending()

    def _write_pending(self) -> None:
        with self._progress_lock:
            self._trailing = None
            pending, self._pending = self._pending, {}
            self._last_write = time.monotonic()
        if not pending:
            return

        ended = threading.Event()

        def apply(op: dict[str, Any]) -> Any:
            if op["state"] in states.OP_TERMINAL:   # ended meanwhile: its outcome stands
                ended.set()
                return KEEP
            return apply_progress(op, pending)

        try:
            data = self.cluster.store.update_json(self.cluster.schema.operation(self.op_id),
                                                  apply)
        except PvcError as e:   # progress is best effort; the outcome is written at the end
            log.warning("operation %s: progress not recorded (%s)", self.op_id, e)
            with self._progress_lock:
                self._pending = merge_pending(pending, self._pending)
            return
        if ended.is_set():
            return
        self.report({"state": "PROGRESS", "message": data.get("message", ""),
                     **{k: v for k, v in data.get("progress", {}).items() if k != "items"}})

    def _take_pending(self) -> dict[str, Any]:
        with self._progress_lock:
            if self._trailing is not None:
                self._trailing.cancel()
                self._trailing = None
            pending, self._pending = self._pending, {}
            return pending

    @property
    def ended(self) -> bool:
        """Whether this run has ended its operation (succeeded, cancelled, failed)."""
        return self.record is not None and self.record.state in states.OP_TERMINAL

    def succeed(self, message: str = "done") -> Operation:
        self.record = finish(self.cluster, self.op_id, states.OpState.SUCCEEDED, message=message,
                             progress=self._take_pending())
        return self.record

    def cancelled_with(self, message: str) -> Operation:
        """End as cancelled (the operator asked; what was done is in the message)."""
        self.record = finish(self.cluster, self.op_id, states.OpState.CANCELLED, message=message,
                             progress=self._take_pending())
        return self.record

    def fail(self, error: str) -> Operation:
        self.record = finish(self.cluster, self.op_id, states.OpState.FAILED, error=error,
                             progress=self._take_pending())
        return self.record


def merge_pending(older: dict[str, Any], newer: dict[str, Any]) -> dict[str, Any]:
    """Progress not yet written: newer values win, items accumulate."""
    merged = {**older, **newer}
    for key in ("items", "outcomes"):
        merged[key] = {**older.get(key, {}), **newer.get(key, {})}
    return merged


class _Busy(Exception):
    """Another operation holds the VM."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder
