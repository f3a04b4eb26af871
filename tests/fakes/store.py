"""The store's contract kept in memory, for the unit tier (no ZooKeeper).

One `MemoryBackend` is the shared tree; each `MemoryStore` on it is a session (its ephemeral
znodes go when it closes or `expire()`s). Watches are delivered on one dispatcher thread, after
the first call made at once, as kazoo does, and like ZooKeeper's they skip what changed between a
notice and its delivery; a write's answer can be lost (`answers_to_lose`) and the write is then
sent again, as the ZooKeeper backend does; the lock recipe is a fair queue.
"""
from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

from pvc.core.errors import Unavailable
from pvc.core.store import (
    NodeExists,
    NoNode,
    NotEmpty,
    SessionEvents,
    Store,
    StoreError,
    Transaction,
    TxOp,
    VersionConflict,
    Versioned,
    encode,
    store_error,
)


@dataclass
class Znode:
    data: bytes
    version: int = 0
    owner: str = ""            # session id of an ephemeral znode


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class MemoryBackend:
    """The tree every MemoryStore session shares."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.nodes: dict[str, Znode] = {"/": Znode(b"")}
        self.data_watches: dict[str, list[Callable[..., Any]]] = {}
        self.child_watches: dict[str, list[Callable[..., Any]]] = {}
        self.locks: dict[str, list[tuple[int, str, str]]] = {}   # path -> [(seq, ident, session)]
        self.lock_changed = threading.Condition(self.lock)
        self._seq = itertools.count(1)
        self._sessions = itertools.count(1)
        self.available = True      # False: every call fails as if ZooKeeper were down
        self.answers_to_lose = 0   # the next writes whose answer is lost (sent again)
        self._events: "queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]]" = queue.Queue()
        self._pending: set[Callable[..., Any]] = set()   # watches with a notice queued
        threading.Thread(target=self._dispatch, name="memstore-watches", daemon=True).start()

    def session(self) -> "MemoryStore":
        return MemoryStore(self, f"0x{next(self._sessions):x}")

    def lose_answer(self) -> bool:
        """Whether the answer of the write just applied is lost (its client sends it again,
        as pvc's ZooKeeper backend does after a connection that dropped meanwhile)."""
        with self.lock:
            if self.answers_to_lose:
                self.answers_to_lose -= 1
                return True
            return False

    # ---------------------------------------------------------------- tree changes
    def children_of(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted(p[len(prefix):] for p in self.nodes
                      if p.startswith(prefix) and "/" not in p[len(prefix):] and p != "/")

    def apply(self, op: str, path: str, data: bytes, version: int, owner: str = "") -> int:
        """One write, checked then done (the caller holds the lock). Returns the version."""
        self.check(op, path, version)
        if op == "check":
            return self.nodes[path].version
        if op == "create":
            self.nodes[path] = Znode(data, 0, owner)
            self._changed(path, parent_too=True)
            return 0
        if op == "set":
            node = self.nodes[path]
            node.data, node.version = data, node.version + 1
            self._changed(path)
            return node.version
        del self.nodes[path]
        self._changed(path, parent_too=True)
        return -1

    def check(self, op: str, path: str, version: int) -> None:
        exists = path in self.nodes
        if op == "create":
            if exists:
                raise store_error(NodeExists, path)
            if _parent(path) not in self.nodes:
                raise store_error(NoNode, path)   # as ZooKeeper: the write's own path
            return
        if not exists:
            raise store_error(NoNode, path)
        if version != -1 and self.nodes[path].version != version:
            raise store_error(VersionConflict, path)
        if op == "delete" and self.children_of(path):
            raise store_error(NotEmpty, path)

    def _changed(self, path: str, parent_too: bool = False) -> None:
        for fn in list(self.data_watches.get(path, [])):
            self._notify(fn, lambda p=path: self._data_state(p))
        if parent_too:
            parent = _parent(path)
            for fn in list(self.child_watches.get(parent, [])):
                self._notify(fn, lambda p=parent: (self.children_of(p),))

    def _data_state(self, path: str) -> tuple[bytes | None, int | None]:
        node = self.nodes.get(path)
        return (node.data, node.version) if node else (None, None)

    def _notify(self, fn: Callable[..., Any], read: Callable[[], tuple[Any, ...]]) -> None:
        """As ZooKeeper: a change fires a watch once; the watcher then reads what is there
        at that time, so values written meanwhile are never seen (one notice pending per
        watch, its value read when it is delivered)."""
        if fn in self._pending:
            return
        self._pending.add(fn)

        def deliver() -> None:
            with self.lock:
                self._pending.discard(fn)
                state = read()
            fn(*state)
        self._events.put((deliver, ()))

    def expire(self, session: str) -> None:
        """A session ends: its ephemeral znodes and lock contenders go."""
        with self.lock:
            for path in [p for p, n in self.nodes.items() if n.owner == session]:
                if path in self.nodes and not self.children_of(path):
                    self.apply("delete", path, b"", -1)
            for path, queue_ in self.locks.items():
                queue_[:] = [c for c in queue_ if c[2] != session]
            self.lock_changed.notify_all()

    # ---------------------------------------------------------------- watch delivery
    def _dispatch(self) -> None:
        while True:
            fn, args = self._events.get()
            fn(*args)

    def quiesce(self, timeout: float = 5.0) -> None:
        """Until every watch event queued so far was delivered (tests wait on this)."""
        done = threading.Event()
        self._events.put((done.set, ()))
        done.wait(timeout)


class MemoryStore(Store):
    """One session on a MemoryBackend."""

    def __init__(self, backend: MemoryBackend, session: str, timeout: float = 1.0) -> None:
        self.backend = backend
        self._session = session
        self.timeout = timeout
        self.session = SessionEvents()

    def expire(self) -> None:
        """The session expires (ephemerals gone), then the client reconnects on a new one;
        returns once every listener heard it."""
        self.session.state_changed("suspended")
        self.backend.expire(self._session)
        self.session.state_changed("lost")
        self._session = f"0x{next(self.backend._sessions):x}"
        self.session.state_changed("connected")
        self.session.delivered()

    def suspend(self) -> None:
        """The connection is lost (the session lives on); returns once listeners heard it."""
        self.session.state_changed("suspended")
        self.session.delivered()

    def resume(self) -> None:
        """Connected again on the same session."""
        self.session.state_changed("connected")
        self.session.delivered()

    def _up(self) -> MemoryBackend:
        if not self.backend.available:
            raise Unavailable(f"ZooKeeper (memory) did not answer within {self.timeout:g}s")
        return self.backend

    # ---------------------------------------------------------------- primitives
    def connect(self) -> "MemoryStore":
        self._up()
        return self

    def close(self, wait: float | None = None) -> None:
        self.backend.expire(self._session)

    @property
    def session_id(self) -> str:
        return self._session

    def get(self, path: str) -> Versioned:
        b = self._up()
        with b.lock:
            node = b.nodes.get(path)
            if node is None:
                raise store_error(NoNode, path)
            return Versioned(node.data, node.version, node.owner)

    def children(self, path: str) -> list[str]:
        b = self._up()
        with b.lock:
            return b.children_of(path) if path in b.nodes else []

    def exists(self, path: str) -> bool:
        b = self._up()
        with b.lock:
            return path in b.nodes

    def _write(self, ops: list[TxOp], do: Callable[[], Any]) -> Any:
        """do() the write; when its answer is lost, do it again as the ZooKeeper backend
        does, with the same recognition of a write that had gone through."""
        answer = do()
        if not self.backend.lose_answer():
            return answer
        try:
            return do()
        except StoreError as err:
            if self.sent_again(err, ops):
                return answer
            raise

    def create(self, path: str, value: Any = b"", ephemeral: bool = False,
               makepath: bool = False) -> str:
        b = self._up()
        op = TxOp("create", path, encode(value), ephemeral=ephemeral)

        def do() -> str:
            with b.lock:
                if makepath:
                    parts = path.strip("/").split("/")
                    for i in range(1, len(parts)):
                        parent = "/" + "/".join(parts[:i])
                        if parent not in b.nodes:
                            b.apply("create", parent, b"", -1)
                b.apply("create", path, op.data, -1, self._session if ephemeral else "")
            return path
        return self._write([op], do)

    def set(self, path: str, value: Any, version: int = -1) -> int:
        b = self._up()
        op = TxOp("set", path, encode(value), version)

        def do() -> int:
            with b.lock:
                return b.apply("set", path, op.data, version)
        return self._write([op], do)

    def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        b = self._up()
        with b.lock:
            if recursive:
                if path not in b.nodes:
                    raise store_error(NoNode, path)
                for p in sorted((p for p in b.nodes if p == path or p.startswith(path + "/")),
                                key=len, reverse=True):
                    b.apply("delete", p, b"", -1)
                return

        def do() -> None:
            with b.lock:
                b.apply("delete", path, b"", version)
        self._write([TxOp("delete", path, version=version)], do)

    def transaction(self) -> "MemoryTransaction":
        return MemoryTransaction(self)

    def watch_raw(self, path: str, fn: Callable[[bytes | None, int | None], bool | None]
                  ) -> None:
        b = self._up()
        active = [True]

        def deliver(data: bytes | None, version: int | None) -> None:
            if active[0] and fn(data, version) is False:
                active[0] = False
                with b.lock:
                    b.data_watches[path].remove(deliver)

        with b.lock:
            node = b.nodes.get(path)
            b.data_watches.setdefault(path, []).append(deliver)
            state = (node.data, node.version) if node else (None, None)
        deliver(*state)

    def watch_children(self, path: str, fn: Callable[[list[str]], bool | None]) -> None:
        b = self._up()
        active = [True]

        def deliver(kids: list[str]) -> None:
            if active[0] and fn(kids) is False:
                active[0] = False
                with b.lock:
                    b.child_watches[path].remove(deliver)

        with b.lock:
            b.child_watches.setdefault(path, []).append(deliver)
            kids = b.children_of(path)
        deliver(kids)

    def secure(self, path: str) -> int:
        return 0   # the memory store has no ACLs

    def lock(self, path: str, identifier: str) -> "MemoryLock":
        return MemoryLock(self, path, identifier)

    def lock_contenders(self, path: str) -> list[str]:
        b = self._up()
        with b.lock:
            return [ident for _seq, ident, _s in b.locks.get(path, [])]


class MemoryLock:
    """A fair queue of contenders, like kazoo's recipe."""

    def __init__(self, store: MemoryStore, path: str, identifier: str) -> None:
        self.store = store
        self.path = path
        self.identifier = identifier
        self._entry: tuple[int, str, str] | None = None
        self._cancelled = False

    def acquire(self, timeout: float | None = None) -> bool:
        b = self.store._up()
        with b.lock_changed:
            self._entry = (next(b._seq), self.identifier, self.store.session_id)
            queue_ = b.locks.setdefault(self.path, [])
            queue_.append(self._entry)
            got = b.lock_changed.wait_for(
                lambda: self._cancelled or (bool(queue_) and queue_[0] == self._entry)
                or self._entry not in queue_, timeout)
            if got and not self._cancelled and queue_ and queue_[0] == self._entry:
                return True
            if self._entry in queue_:
                queue_.remove(self._entry)
            b.lock_changed.notify_all()
            return False

    def cancel(self) -> None:
        b = self.store.backend
        with b.lock_changed:
            self._cancelled = True
            b.lock_changed.notify_all()

    def release(self) -> None:
        b = self.store.backend
        with b.lock_changed:
            queue_ = b.locks.get(self.path, [])
            if self._entry in queue_:
                queue_.remove(self._entry)
            b.lock_changed.notify_all()


class MemoryTransaction(Transaction):
    def __init__(self, store: MemoryStore) -> None:
        super().__init__()
        self.store = store

    def _commit(self) -> None:
        self.store._write(self.ops, self._apply)

    def _apply(self) -> None:
        b = self.store._up()
        with b.lock:
            # check every write against the tree as the earlier ones would leave it
            shadow = {p: Znode(n.data, n.version, n.owner) for p, n in b.nodes.items()}
            saved = b.nodes
            b.nodes = shadow
            try:
                for op in self.ops:
                    b.check(op.op, op.path, op.version)
                    self._shadow_apply(shadow, op.op, op.path, op.data)
            finally:
                b.nodes = saved
            owner = self.store.session_id
            for op in self.ops:
                b.apply(op.op, op.path, op.data, op.version, owner if op.ephemeral else "")

    @staticmethod
    def _shadow_apply(tree: dict[str, Znode], op: str, path: str, data: bytes) -> None:
        if op == "create":
            tree[path] = Znode(data)
        elif op == "set":
            tree[path] = Znode(data, tree[path].version + 1)
        elif op == "delete":
            del tree[path]
