"""The store: what pvc needs from its source of truth, whatever holds it.

`Store` names the few primitives a backend provides (read, create, set, delete, children,
transactions, watches, the lock recipe) and builds everything else on them once: JSON and text
reads, create-if-missing, the one compare-and-set helper (`update`), and waits pushed by
watches. `pvc.core.zookeeper.ZkStore` is the production backend (the only kazoo user);
`tests/fakes/store.py` keeps the same contract in memory for the unit tier.

Paths come from `pvc.core.schema`; this module only moves bytes and JSON.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Iterable, Iterator, Protocol

from pvc.core.errors import Conflict, NotFound, Unavailable

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------- errors


class StoreError(Exception):
    """Mixin: the error concerns one znode (kept so callers can tell whose write failed)."""

    path: str = ""


class NoNode(NotFound, StoreError):
    """The znode does not exist."""


class NodeExists(Conflict, StoreError):
    """The znode already exists."""


class VersionConflict(Conflict, StoreError):
    """The znode changed since it was read (compare-and-set lost)."""


class NotEmpty(Conflict, StoreError):
    """The znode has children."""


class NotAllowed(Unavailable, StoreError):
    """ZooKeeper refused: this client is not the cluster's identity."""


# What each store error says: one line that names the object, never a bare kazoo error.
ERROR_TEXT: dict[type[StoreError], str] = {
    NoNode: "{path} does not exist",
    NodeExists: "{path} already exists",
    VersionConflict: "{path} was changed concurrently",
    NotEmpty: "{path} has children",
    NotAllowed: "ZooKeeper refused access to {path}: the cluster's identity "
                "(cluster.zookeeper.auth_file: its user and password, and the servers' JAAS "
                "file) is missing or wrong",
}


# The errors of a write that lost a race with another writer.
RACES = (NoNode, NodeExists, VersionConflict, NotEmpty)


def store_error(kind: type[StoreError], path: str) -> StoreError:
    err = kind(ERROR_TEXT[kind].format(path=path))
    err.path = path
    return err


# ---------------------------------------------------------------------- values


def encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def decode_json(data: bytes | None) -> Any:
    if not data:
        return None
    return json.loads(data)


def decode_text(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


@dataclass
class Versioned:
    value: Any
    version: int
    owner: str = ""   # the session that owns an ephemeral znode; "" for a persistent one


class _Keep:
    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()
"""Returned by an `update` change function: nothing to write."""

_RAISE: Any = object()

Change = Callable[[Any, "Transaction"], Any]


# ---------------------------------------------------------------------- transactions


Refusal = Exception | Callable[[], Exception]
Refusals = dict[type[Exception], Refusal]
"""What a lost race means to the caller, by the store error it raised (matched in order,
with isinstance): the exception to raise instead, or a function that makes it."""


@dataclass(frozen=True)
class TxOp:
    op: str              # check / create / set / delete
    path: str
    data: bytes = b""
    version: int = -1
    ephemeral: bool = False
    refuse: Refusals = field(default_factory=dict, compare=False)


class Transaction(ABC):
    """Several writes that all happen or none do. commit() raises the first failing write's
    error (NoNode, NodeExists, VersionConflict, NotEmpty), carrying that write's path; or,
    for a refuse-on-race caller, what that write's `refuse` (else the commit's) says it
    means: one sentence naming the object, nothing changed."""

    def __init__(self) -> None:
        self.ops: list[TxOp] = []

    def check(self, path: str, version: int, refuse: Refusals | None = None) -> "Transaction":
        self.ops.append(TxOp("check", path, version=version, refuse=refuse or {}))
        return self

    def create(self, path: str, value: Any = b"", ephemeral: bool = False,
               refuse: Refusals | None = None) -> "Transaction":
        self.ops.append(TxOp("create", path, encode(value), ephemeral=ephemeral,
                             refuse=refuse or {}))
        return self

    def set(self, path: str, value: Any, version: int = -1,
            refuse: Refusals | None = None) -> "Transaction":
        self.ops.append(TxOp("set", path, encode(value), version, refuse=refuse or {}))
        return self

    def delete(self, path: str, version: int = -1,
               refuse: Refusals | None = None) -> "Transaction":
        self.ops.append(TxOp("delete", path, version=version, refuse=refuse or {}))
        return self

    def commit(self, refuse: Refusals | None = None) -> None:
        if not self.ops:
            return
        try:
            self._commit()
        except StoreError as err:
            refusal = self._refusal(err, refuse or {})
            if refusal is None:
                raise
            raise refusal from None

    def _refusal(self, err: StoreError, default: Refusals) -> Exception | None:
        failed = next((op for op in self.ops if op.path == err.path), None)
        for table in ((failed.refuse if failed else {}), default):
            for kind, meaning in table.items():
                if isinstance(err, kind):
                    return meaning if isinstance(meaning, Exception) else meaning()
        return None

    @abstractmethod
    def _commit(self) -> None:
        """Apply self.ops atomically."""


class ClusterLock(Protocol):
    """A fair, ephemeral lock: freed when its holder's session dies."""

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for the lock; False if the wait timed out or was cancelled."""

    def cancel(self) -> None:
        """Make a waiting acquire() give up (from another thread)."""

    def release(self) -> None:
        """Give the lock to the next in the queue."""


# ---------------------------------------------------------------------- session events


class SessionEvent(StrEnum):
    """What happened to the store's session, as its listeners hear it."""
    SUSPENDED = "suspended"        # connection lost; the session and its ephemerals may live on
    RECONNECTED = "reconnected"    # back on the same session: nothing was lost
    EXPIRED = "expired"            # the session is gone, and with it every ephemeral znode,
                                   # lock place and lease it held
    NEW_SESSION = "new-session"    # connected again on a new session: re-create what was
                                   # ephemeral, or stop acting on it


# The one table from "was" and "now" connection states to the event listeners hear.
SESSION_EVENTS: dict[tuple[str, str], SessionEvent] = {
    ("connected", "suspended"): SessionEvent.SUSPENDED,
    ("suspended", "connected"): SessionEvent.RECONNECTED,
    ("connected", "lost"): SessionEvent.EXPIRED,
    ("suspended", "lost"): SessionEvent.EXPIRED,
    ("lost", "connected"): SessionEvent.NEW_SESSION,
}
SessionListener = Callable[[SessionEvent], None]


class SessionEvents:
    """Turns a backend's connection states into SessionEvents, delivered in order on a thread
    of their own: a listener may use the store (it never runs inside the backend's callback)."""

    def __init__(self) -> None:
        self.state = "connected"
        self.listeners: list[SessionListener] = []
        self._queue: "queue.Queue[SessionEvent]" = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def state_changed(self, now: str) -> None:
        """Called by the backend with "connected", "suspended" or "lost"; must not block."""
        with self._lock:
            event = SESSION_EVENTS.get((self.state, now))
            self.state = now
            if event is None:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver, name="store-session",
                                                daemon=True)
                self._thread.start()
        self._queue.put(event)

    def _deliver(self) -> None:
        while True:
            event = self._queue.get()
            log.info("ZooKeeper session: %s", event)
            for fn in list(self.listeners):
                try:
                    fn(event)
                except Exception:   # one listener's failure must not silence the others
                    log.exception("session listener failed on %s", event)
            self._queue.task_done()

    def delivered(self) -> None:
        """Until every event so far reached every listener."""
        self._queue.join()


# ---------------------------------------------------------------------- the store


class Store(ABC):
    """A connection to the cluster state. Every call is bounded by `timeout` seconds."""

    timeout: float = 5.0
    session: SessionEvents

    def on_session(self, fn: SessionListener) -> Callable[[], None]:
        """Call fn(event) on every SessionEvent (on the store's session thread). Returns the
        function that stops it."""
        self.session.listeners.append(fn)

        def stop() -> None:
            if fn in self.session.listeners:
                self.session.listeners.remove(fn)
        return stop

    # -------------------------------------------------------------- primitives
    @abstractmethod
    def connect(self) -> "Store":
        """Open the session; raise Unavailable if the servers do not answer in time."""

    @abstractmethod
    def close(self, wait: float | None = None) -> None:
        """End the session (its ephemeral znodes go with it). wait: at most this long (a
        process about to end need not wait for a server: its session ends by timeout)."""

    @property
    @abstractmethod
    def session_id(self) -> str:
        """The session's id, as stored in liveness znodes."""

    @abstractmethod
    def get(self, path: str) -> Versioned:
        """Raw bytes and version; NoNode if missing."""

    @abstractmethod
    def children(self, path: str) -> list[str]:
        """Sorted child names; [] if path is missing."""

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def create(self, path: str, value: Any = b"", ephemeral: bool = False,
               makepath: bool = False) -> str: ...

    @abstractmethod
    def set(self, path: str, value: Any, version: int = -1) -> int:
        """Write path if its version is still `version` (-1: any); returns the new version."""

    @abstractmethod
    def delete(self, path: str, version: int = -1, recursive: bool = False) -> None: ...

    @abstractmethod
    def transaction(self) -> Transaction: ...

    @abstractmethod
    def watch_raw(self, path: str, fn: Callable[[bytes | None, int | None], bool | None]
                  ) -> None:
        """Call fn(data, version) now and on every change (None, None while missing);
        fn returning False ends the watch."""

    @abstractmethod
    def watch_children(self, path: str, fn: Callable[[list[str]], bool | None]) -> None:
        """Call fn(children) now and on every change; False ends the watch."""

    @abstractmethod
    def lock(self, path: str, identifier: str) -> ClusterLock: ...

    @abstractmethod
    def secure(self, path: str) -> int:
        """Give path and everything below it the cluster's ACL; how many znodes changed."""

    @abstractmethod
    def lock_contenders(self, path: str) -> list[str]:
        """Identifiers of a lock's holder (first) and its queue, in order."""

    # -------------------------------------------------------------- lost answers
    def applied(self, ops: Iterable[TxOp]) -> bool:
        """Whether the store holds now what these writes leave: a created znode holds the
        data sent, unchanged since (an ephemeral one owned by this session), a set one holds
        the data sent at the version after the one expected, a deleted one is gone."""
        return all(self._holds(op) for op in ops)

    def _holds(self, op: TxOp) -> bool:
        if op.op == "check":
            return True
        try:
            now = self.get(op.path)
        except NoNode:
            return op.op == "delete"
        if op.op == "delete" or now.value != op.data:
            return False
        if op.op == "create":
            return now.version == 0 and now.owner == (self.session_id if op.ephemeral else "")
        return op.version == -1 or now.version == op.version + 1

    def sent_again(self, err: StoreError, ops: Iterable[TxOp]) -> bool:
        """A write sent again after its answer was lost (the connection dropped after the
        request left) failed with err. True when it failed only because the first sending
        went through: the write is the caller's, and succeeded. So a retried create never
        refuses the caller its own znode, nor a transaction its own records."""
        if isinstance(err, RACES) and self.applied(ops):
            log.info("%s: its answer was lost; the write had gone through", err.path)
            return True
        return False

    # -------------------------------------------------------------- bulk reads
    def iter_many(self, paths: Iterable[str]) -> Iterator[bytes | None]:
        """Each path's data in order (None when missing). Backends pipeline this."""
        for p in paths:
            try:
                yield self.get(p).value
            except NoNode:
                yield None

    def get_many(self, paths: Iterable[str]) -> list[bytes | None]:
        return list(self.iter_many(paths))

    def get_many_versioned(self, paths: Iterable[str]) -> list[Versioned | None]:
        """Each path's data and version (None when missing). Backends pipeline this."""
        out: list[Versioned | None] = []
        for p in paths:
            try:
                out.append(self.get(p))
            except NoNode:
                out.append(None)
        return out

    def get_json_many_versioned(self, paths: Iterable[str]) -> list[Versioned | None]:
        return [None if v is None else Versioned(decode_json(v.value), v.version)
                for v in self.get_many_versioned(paths)]

    def child_counts(self, paths: Iterable[str]) -> list[int]:
        return [len(self.children(p)) for p in paths]

    # -------------------------------------------------------------- derived reads
    def get_json(self, path: str, default: Any = _RAISE) -> Any:
        try:
            return decode_json(self.get(path).value)
        except NoNode:
            if default is _RAISE:
                raise
            return default

    def get_json_versioned(self, path: str) -> Versioned:
        v = self.get(path)
        return Versioned(decode_json(v.value), v.version)

    def get_text(self, path: str, default: str | None = None) -> str | None:
        try:
            return self.get(path).value.decode()
        except NoNode:
            return default

    def get_json_many(self, paths: Iterable[str]) -> list[Any]:
        return [decode_json(d) for d in self.get_many(paths)]

    # -------------------------------------------------------------- derived writes
    def ensure(self, path: str, value: Any = b"") -> bool:
        """Create path (and parents) unless it exists; True if created."""
        try:
            self.create(path, value, makepath=True)
            return True
        except NodeExists:
            return False

    def put(self, path: str, value: Any) -> None:
        """Set path, creating it if missing (single-writer znodes only)."""
        try:
            self.set(path, value)
        except NoNode:
            try:
                self.create(path, value, makepath=True)
            except NodeExists:
                self.set(path, value)

    def update(self, path: str, change: Change, missing: Any = _RAISE,
               known: Versioned | None = None, attempts: int = 20) -> Versioned:
        """The compare-and-set helper: read path's JSON, let `change(value, tx)` return the
        new value (or KEEP: nothing to write) and add further writes to `tx`; commit the new
        value only if path is unchanged since the read, together with tx's writes. When any of
        the writes loses a race (version moved, znode created or deleted meanwhile), it starts
        over with a fresh read and a fresh transaction: change() must decide from what it reads.

        missing: the value change() sees when path does not exist (it is then created);
        without it a missing path raises NoNode.
        known: a value and version the caller already holds (skips the first read). A KEEP
        decided on it is confirmed against a real read, since it may be stale.
        Returns what path now holds (value and version)."""
        guess = known
        for _ in range(attempts):
            if guess is not None:
                current, from_guess = guess, True
                guess = None
            else:
                current, from_guess = self._read_for_update(path, missing), False
            tx = self.transaction()
            new = change(current.value, tx)
            if new is KEEP:
                if from_guess:
                    continue
                tx.commit()
                return current
            if current.version < 0:
                tx.ops.insert(0, TxOp("create", path, encode(new)))
            else:
                tx.ops.insert(0, TxOp("set", path, encode(new), current.version))
            try:
                tx.commit()
            except RACES:
                continue   # a write lost a race: read again, decide again
            return Versioned(new, current.version + 1)
        raise store_error(VersionConflict, path)

    def _read_for_update(self, path: str, missing: Any) -> Versioned:
        try:
            return self.get_json_versioned(path)
        except NoNode:
            if missing is _RAISE:
                raise
            return Versioned(missing, -1)

    def update_json(self, path: str, change: Callable[[Any], Any], attempts: int = 20) -> Any:
        """update() for a change of path alone; returns the new value."""
        return self.update(path, lambda value, _tx: change(value), attempts=attempts).value

    # -------------------------------------------------------------- waits (pushed by watches)
    def watch_data(self, path: str, fn: Callable[[Any, int | None], bool | None]) -> None:
        """Like watch_raw, with the data decoded as JSON."""
        self.watch_raw(path, lambda data, version: fn(
            decode_json(data) if version is not None else None, version))

    def wait_for(self, path: str, predicate: Callable[[Any], bool], timeout: float | None,
                 decode: Callable[[bytes | None], Any] = decode_json) -> Any:
        """Block until predicate(decoded value at path; None when missing) is true, pushed by
        a watch. Returns the value; raises TimeoutError after `timeout` s (None: forever)."""
        done = threading.Event()
        seen: list[Any] = [None]

        def check(data: bytes | None, version: int | None) -> bool:
            value = decode(data) if version is not None else None
            seen[0] = value
            if predicate(value):
                done.set()
                return False
            return True

        self.watch_raw(path, check)
        if not done.wait(timeout):
            raise TimeoutError(f"{path} did not reach the expected state in {timeout}s")
        return seen[0]

    def wait_gone(self, path: str, timeout: float | None) -> None:
        """Block until path does not exist (e.g. a lease whose holder ends or dies)."""
        self.wait_for(path, lambda v: v is None, timeout, decode=lambda d: d)

    def wait_for_children(self, path: str, predicate: Callable[[list[str]], bool],
                          timeout: float | None) -> list[str]:
        """Block until predicate(children of path) is true, pushed by a watch."""
        done = threading.Event()
        seen: list[list[str]] = [[]]

        def check(children: list[str]) -> bool:
            seen[0] = children
            if predicate(children):
                done.set()
                return False
            return True

        self.ensure(path)
        self.watch_children(path, check)
        if not done.wait(timeout):
            raise TimeoutError(f"children of {path} did not reach the expected state")
        return seen[0]

    def __enter__(self) -> "Store":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()
