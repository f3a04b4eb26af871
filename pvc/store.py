"""The ZooKeeper store: the only module that imports kazoo's client.

Every call is bounded by `timeout` seconds (a lost quorum never hangs a CLI or a task) and goes
through one retry helper, `_call`. Read-modify-write goes through `update_json` (compare-and-set
on the znode version) or a `Transaction`. Paths come from `pvc.schema`; this module only moves
bytes and JSON.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import (BadVersionError, CancelledError, ConnectionClosedError,
                              ConnectionLoss, KazooException, LockTimeout, NodeExistsError,
                              NoNodeError, NotEmptyError, OperationTimeoutError, RolledBackError,
                              SessionExpiredError)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.recipe.lock import Lock
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from pvc.errors import Conflict, NotFound, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRYABLE = (ConnectionLoss, OperationTimeoutError)
_UNAVAILABLE = (KazooTimeoutError, SessionExpiredError, ConnectionClosedError)


class NoNode(NotFound):
    """The znode does not exist."""


class NodeExists(Conflict):
    """The znode already exists."""


class VersionConflict(Conflict):
    """The znode changed since it was read (compare-and-set lost)."""


class NotEmpty(Conflict):
    """The znode has children."""


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


class Store:
    """A connection to the cluster state."""

    def __init__(self, hosts: str, timeout: float = 5.0, session_timeout: float = 10.0) -> None:
        self.hosts = hosts
        self.timeout = timeout
        self.zk = KazooClient(hosts=hosts, timeout=session_timeout,
                              connection_retry={"max_tries": -1, "delay": 0.05,
                                                "max_delay": 1.0},
                              command_retry=None)

    # ------------------------------------------------------------------ connection
    def connect(self) -> "Store":
        try:
            self.zk.start(timeout=self.timeout)
        except (KazooTimeoutError, KazooException) as e:
            self.zk.stop()
            self.zk.close()
            raise Unavailable(f"cannot reach ZooKeeper at {self.hosts} "
                              f"(no answer within {self.timeout:g}s)") from e
        return self

    def close(self) -> None:
        try:
            self.zk.stop()
            self.zk.close()
        except KazooException:
            pass

    def __enter__(self) -> "Store":
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def session_id(self) -> str:
        sid = self.zk.client_id
        return f"0x{sid[0]:x}" if sid else ""

    # ------------------------------------------------------------------ the retry helper
    def _call(self, method: str, path: str, *args: Any, **kw: Any) -> Any:
        """Run one kazoo call bounded by self.timeout, retrying connection loss until then."""
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while True:
            remaining = deadline - time.monotonic()
            try:
                async_result = getattr(self.zk, method + "_async")(path, *args, **kw)
                return async_result.get(timeout=max(remaining, 0.001))
            except _RETRYABLE:
                if time.monotonic() + delay >= deadline:
                    raise self._unavailable(method, path) from None
                time.sleep(delay)  # back-off between retries of a lost connection
                delay = min(delay * 2, 0.5)
            except _UNAVAILABLE:
                raise self._unavailable(method, path) from None
            except NoNodeError:
                raise NoNode(f"{path} does not exist") from None
            except NodeExistsError:
                raise NodeExists(f"{path} already exists") from None
            except BadVersionError:
                raise VersionConflict(f"{path} was changed concurrently") from None
            except NotEmptyError:
                raise NotEmpty(f"{path} has children") from None

    def _unavailable(self, method: str, path: str) -> Unavailable:
        return Unavailable(f"ZooKeeper at {self.hosts} did not answer within {self.timeout:g}s "
                           f"({method} {path})")

    # ------------------------------------------------------------------ reads
    def get(self, path: str) -> Versioned:
        data, stat = self._call("get", path)
        return Versioned(data, stat.version)

    def get_json(self, path: str, default: Any = NoNode) -> Any:
        try:
            return decode_json(self.get(path).value)
        except NoNode:
            if default is NoNode:
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

    def get_many(self, paths: Iterable[str]) -> list[bytes | None]:
        """Read many znodes in one pipelined round; a missing znode reads as None."""
        return list(self.iter_many(paths))

    def iter_many(self, paths: Iterable[str]) -> Iterator[bytes | None]:
        """Like get_many, but yields each value as soon as it arrived, in order, so the caller
        can work on the first while the rest are on their way."""
        paths = list(paths)
        deadline = time.monotonic() + self.timeout
        try:
            pending = [self.zk.get_async(p) for p in paths]
        except _RETRYABLE + _UNAVAILABLE:
            raise self._unavailable("get", f"{len(paths)} znodes") from None
        for p, res in zip(paths, pending):
            try:
                yield res.get(timeout=max(deadline - time.monotonic(), 0.001))[0]
            except NoNodeError:
                yield None
            except _RETRYABLE + _UNAVAILABLE:
                # A connection blip in a bulk read: fall back to the retrying single call.
                try:
                    yield self.get(p).value
                except NoNode:
                    yield None

    def child_counts(self, paths: Iterable[str]) -> list[int]:
        """How many children each path has (0 if missing), in one pipelined round."""
        paths = list(paths)
        deadline = time.monotonic() + self.timeout
        try:
            pending = [self.zk.exists_async(p) for p in paths]
            stats = [r.get(timeout=max(deadline - time.monotonic(), 0.001)) for r in pending]
        except _RETRYABLE + _UNAVAILABLE:
            raise self._unavailable("exists", f"{len(paths)} znodes") from None
        return [s.numChildren if s else 0 for s in stats]

    def get_json_many(self, paths: Iterable[str]) -> list[Any]:
        return [decode_json(d) for d in self.get_many(paths)]

    def children(self, path: str) -> list[str]:
        try:
            return sorted(self._call("get_children", path))
        except NoNode:
            return []

    def exists(self, path: str) -> bool:
        return self._call("exists", path) is not None

    # ------------------------------------------------------------------ writes
    def create(self, path: str, value: Any = b"", ephemeral: bool = False,
               makepath: bool = False) -> str:
        return self._call("create", path, encode(value), ephemeral=ephemeral, makepath=makepath)

    def ensure(self, path: str, value: Any = b"") -> bool:
        """Create path (and parents) unless it exists; True if created."""
        try:
            self.create(path, value, makepath=True)
            return True
        except NodeExists:
            return False

    def set(self, path: str, value: Any, version: int = -1) -> int:
        return self._call("set", path, encode(value), version).version

    def put(self, path: str, value: Any) -> None:
        """Set path, creating it if missing (single writer znodes only)."""
        try:
            self.set(path, value)
        except NoNode:
            try:
                self.create(path, value, makepath=True)
            except NodeExists:
                self.set(path, value)

    def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        if recursive:
            # kazoo's recursive delete is a sequence of calls; bound the whole.
            try:
                self.zk.delete(path, recursive=True)
            except NoNodeError:
                raise NoNode(f"{path} does not exist") from None
            except _RETRYABLE + _UNAVAILABLE:
                raise self._unavailable("delete", path) from None
            return
        self._call("delete", path, version)

    def update_json(self, path: str, change: Callable[[Any], T], attempts: int = 20) -> T:
        """Compare-and-set loop: change(current) returns the new value (or raises to abort)."""
        for _ in range(attempts):
            current = self.get_json_versioned(path)
            new = change(current.value)
            try:
                self.set(path, new, version=current.version)
                return new
            except VersionConflict:
                continue
        raise VersionConflict(f"{path} kept changing; gave up after {attempts} attempts")

    def transaction(self) -> "Transaction":
        return Transaction(self)

    # ------------------------------------------------------------------ watches
    def watch_data(self, path: str, fn: Callable[[Any, int | None], bool | None]) -> None:
        """Call fn(json_value, version) now and on every change; version None when missing.
        fn returning False stops the watch."""
        def cb(data: bytes | None, stat: Any) -> bool | None:
            return fn(decode_json(data) if stat else None, stat.version if stat else None)
        DataWatch(self.zk, path, cb)

    def watch_raw(self, path: str, fn: Callable[[bytes | None, int | None], bool | None]) -> None:
        DataWatch(self.zk, path, lambda d, s: fn(d if s else None, s.version if s else None))

    def watch_children(self, path: str, fn: Callable[[list[str]], bool | None]) -> None:
        ChildrenWatch(self.zk, path, fn)

    def wait_for(self, path: str, predicate: Callable[[Any], bool], timeout: float | None,
                 decode: Callable[[bytes | None], Any] = decode_json) -> Any:
        """Block until predicate(decoded value at path; None when missing) is true, pushed by
        a watch. Returns the value; raises TimeoutError after `timeout` s (None: forever)."""
        done = threading.Event()
        seen: list[Any] = [None]

        def check(data: bytes | None, _version: int | None) -> bool:
            value = decode(data) if data is not None else None
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

    # ------------------------------------------------------------------ recipes
    def lock(self, path: str, identifier: str) -> "ClusterLock":
        return ClusterLock(self, Lock(self.zk, path, identifier))

    def lock_contenders(self, path: str) -> list[str]:
        """Identifiers of a lock's holder (first) and its queue, in order."""
        try:
            return list(Lock(self.zk, path).contenders())
        except NoNodeError:
            return []
        except _RETRYABLE + _UNAVAILABLE:
            raise self._unavailable("contenders", path) from None


class ClusterLock:
    """A fair, ephemeral lock (kazoo's recipe): freed when its holder's session dies."""

    def __init__(self, store: Store, lock: Lock) -> None:
        self.store = store
        self._lock = lock

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait for the lock; False if the wait timed out or was cancelled."""
        try:
            return bool(self._lock.acquire(blocking=True, timeout=timeout))
        except _RETRYABLE + _UNAVAILABLE:
            raise Unavailable("lost ZooKeeper while waiting for a lock") from None
        except (LockTimeout, CancelledError):
            return False

    def cancel(self) -> None:
        """Make a waiting acquire() give up (from another thread)."""
        self._lock.cancel()

    def release(self) -> None:
        try:
            self._lock.release()
        except KazooException:
            log.warning("could not release lock cleanly; its session's end will free it")



class Transaction:
    """Several writes that all happen or none do. commit() raises the first failing op's error."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tx = store.zk.transaction()
        self._ops: list[str] = []

    def check(self, path: str, version: int) -> "Transaction":
        self._tx.check(path, version)
        self._ops.append(f"check {path}")
        return self

    def create(self, path: str, value: Any = b"") -> "Transaction":
        self._tx.create(path, encode(value))
        self._ops.append(f"create {path}")
        return self

    def set(self, path: str, value: Any, version: int = -1) -> "Transaction":
        self._tx.set_data(path, encode(value), version)
        self._ops.append(f"set {path}")
        return self

    def delete(self, path: str, version: int = -1) -> "Transaction":
        self._tx.delete(path, version)
        self._ops.append(f"delete {path}")
        return self

    def commit(self) -> None:
        if not self._ops:
            return
        try:
            results = self._tx.commit_async().get(timeout=self.store.timeout)
        except _RETRYABLE + _UNAVAILABLE:
            raise self.store._unavailable("transaction", self._ops[0]) from None
        for op, result in zip(self._ops, results):
            if isinstance(result, Exception) and not isinstance(result, RolledBackError):
                path = op.split(" ", 1)[1]
                raise _map_error(result, path)


def _map_error(err: Exception, path: str) -> Exception:
    if isinstance(err, NoNodeError):
        return NoNode(f"{path} does not exist")
    if isinstance(err, NodeExistsError):
        return NodeExists(f"{path} already exists")
    if isinstance(err, BadVersionError):
        return VersionConflict(f"{path} was changed concurrently")
    if isinstance(err, NotEmptyError):
        return NotEmpty(f"{path} has children")
    return Conflict(f"{path}: {err!r}")


