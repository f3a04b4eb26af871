"""The ZooKeeper backend of the store: the only module that imports kazoo.

Every call is bounded by `timeout` seconds (a lost quorum never hangs a CLI or a task) and goes
through one retry helper, `_call`, with jittered back-off. One table, `KAZOO_ERRORS`, turns
kazoo's errors into pvc's.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from kazoo.client import KazooClient, KeeperState
from kazoo.exceptions import (
    AuthFailedError,
    BadVersionError,
    CancelledError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    LockTimeout,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    OperationTimeoutError,
    RolledBackError,
    SessionClosedRequireSaslError,
    SessionExpiredError,
    UnimplementedError,
    ZookeeperError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import (
    EXCEPTIONS,
    GetData,
    MultiHeader,
    multiheader_struct,
    read_buffer,
    stat_struct,
)
from kazoo.recipe.lock import Lock
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.security import make_digest_acl

from pvc.core.errors import Conflict, Unavailable
from pvc.core.store import (
    NodeExists,
    NoNode,
    NotAllowed,
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

log = logging.getLogger(__name__)
REVIVE_DELAY = 1.0   # seconds between a refused login and a new session

# kazoo error -> pvc store error
KAZOO_ERRORS: dict[type[Exception], type[StoreError]] = {
    NoNodeError: NoNode,
    NodeExistsError: NodeExists,
    BadVersionError: VersionConflict,
    NotEmptyError: NotEmpty,
    NoAuthError: NotAllowed,
    AuthFailedError: NotAllowed,                   # pvc's SASL login was refused
    SessionClosedRequireSaslError: NotAllowed,     # a session without a login was closed
}
_RETRYABLE = (ConnectionLoss, OperationTimeoutError)
_UNAVAILABLE = (KazooTimeoutError, SessionExpiredError, ConnectionClosedError)
_LOST = _RETRYABLE + _UNAVAILABLE


def translate(err: Exception, path: str) -> Exception:
    """pvc's error for a kazoo error about path."""
    kind = KAZOO_ERRORS.get(type(err))
    if kind is not None:
        return store_error(kind, path)
    return Conflict(f"{path}: {err!r}")


def sasl_login(user: str, password: str) -> dict[str, str]:
    """kazoo's options for a SASL DIGEST-MD5 login (ZooKeeper's DigestLoginModule)."""
    return {"mechanism": "DIGEST-MD5", "username": user, "password": password}


def _end_refused_logins(zk: KazooClient, failed: Callable[[], None]) -> None:
    """kazoo raises the server's refusal of a SASL login (a wrong password) from its
    connection thread, which then dies with the client still "connected" and every call
    hanging; raised as AuthFailedError instead, kazoo ends the session itself and fails
    every pending and later call with it (NotAllowed here). failed() is told of every
    failed login (kazoo's own, a connection dropped during the login, included)."""
    conn = zk._connection
    login = conn._authenticate_with_sasl

    def guarded(host: str, timeout: float) -> None:
        try:
            login(host, timeout)
        except AuthFailedError:
            failed()
            raise
        except ZookeeperError as e:
            failed()
            raise AuthFailedError(f"SASL login refused ({type(e).__name__})") from e

    conn._authenticate_with_sasl = guarded


def refuses_anonymous_sessions(hosts: str, timeout: float = 5.0) -> bool:
    """Whether the servers refuse a session that has not logged in (a request without a
    login is answered by closing the session, or the session never opens)."""
    zk = KazooClient(hosts=hosts, timeout=max(timeout, 1.0),
                     connection_retry={"max_tries": 1, "delay": 0.05})
    try:
        zk.start(timeout=timeout)
        zk.exists("/")
        return False
    except (KazooException, KazooTimeoutError):
        return True
    finally:
        threading.Thread(target=lambda: (zk.stop(), zk.close()), daemon=True).start()


def answers_four_letter_word(host: str, port: int, word: str, timeout: float = 3.0) -> bool:
    """Whether a server answers a four-letter word (not only with "not in the whitelist")."""
    import socket
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(word.encode())
            answer = s.recv(200)
    except OSError:
        return False
    return bool(answer) and b"not in the whitelist" not in answer and \
        b"not executed" not in answer


def member_mode(host: str, port: int, timeout: float = 1.0) -> str:
    """What one server says it is (`srvr`): "leader", "follower", "standalone"; "not
    serving" when it answers without a quorum, "down" when it does not answer."""
    import socket
    answer = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"srvr")
            while chunk := s.recv(1024):
                answer += chunk
    except OSError:
        return "down" if not answer else "not serving"
    for line in answer.decode(errors="replace").splitlines():
        if line.startswith("Mode: "):
            return line.split(":", 1)[1].strip()
    return "not serving"


def member_modes(hosts: str, timeout: float = 1.0) -> dict[str, str]:
    """Every server of a connection string and its mode (member_mode), in order."""
    out = {}
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        out[item.strip()] = member_mode(host, int(port), timeout)
    return out


SERVING_MODES = ("leader", "follower", "standalone")


def backoff(delay: float) -> float:
    """The next retry delay: doubled, capped, with jitter so retrying clients spread out."""
    return min(delay * 2, 0.5) * random.uniform(0.5, 1.5)


class ZkStore(Store):
    """A connection to the cluster state in ZooKeeper."""

    def __init__(self, hosts: str, timeout: float = 5.0, session_timeout: float = 10.0,
                 auth: tuple[str, str] | None = None, sasl: bool = True) -> None:
        """auth: (user, password) of the cluster's identity. The session logs in with it over
        SASL (DIGEST-MD5, checked by the servers against their JAAS file, so a session
        without the password gets nothing at all) unless sasl is False, and also presents
        it as a digest identity: every znode pvc creates is readable and writable by that
        identity only, so other authenticated users (Patroni) cannot touch pvc's tree."""
        self.hosts = hosts
        self.timeout = timeout
        self.acl = [make_digest_acl(auth[0], auth[1], all=True)] if auth else None
        self.zk = KazooClient(hosts=hosts, timeout=session_timeout,
                              connection_retry={"max_tries": -1, "delay": 0.05,
                                                "max_delay": 1.0},
                              command_retry=None, default_acl=self.acl,
                              auth_data=[("digest", f"{auth[0]}:{auth[1]}")] if auth else None,
                              sasl_options=sasl_login(*auth) if auth and sasl else None)
        self._closing = False
        self._multi_read = True   # until a server says it has none
        _end_refused_logins(self.zk, self._login_failed)
        self.session = SessionEvents()
        # kazoo calls this on its own thread; it only records the state (no ZooKeeper calls)
        self.zk.add_listener(lambda state: self.session.state_changed(str(state).lower()))

    def _login_failed(self) -> None:
        if not self._closing:
            threading.Thread(target=self._revive, name="zk-revive", daemon=True).start()

    def _revive(self) -> None:
        """kazoo stops for good once a login fails, and it takes a connection dropped in the
        middle of the SASL exchange (a member paused, restarted or cut off) for a failed login:
        a daemon or a worker would never talk to ZooKeeper again. A store its owner has not
        closed starts a new session instead, as after an expiry (its listeners see
        `new-session` and register again); a password the servers really refuse is refused
        again, once per REVIVE_DELAY, each time in the log."""
        time.sleep(REVIVE_DELAY)   # kazoo's connection thread ends meanwhile
        if self._closing or self.zk.client_state not in (KeeperState.AUTH_FAILED,
                                                          KeeperState.CLOSED):
            return   # the login was tried again and went through (kazoo still runs)
        log.warning("ZooKeeper login failed (kazoo stopped the client): starting a new session")
        self.zk.stop()          # what kazoo left of the ended connection
        self.zk._queue.clear()  # stop() queued a Close that no connection sent: not ours
        self.zk.start_async()

    # ------------------------------------------------------------------ connection
    def connect(self) -> "ZkStore":
        started = time.monotonic()
        try:
            self.zk.start(timeout=self.timeout)
        except (KazooTimeoutError, KazooException) as e:
            # kazoo's stop waits for its connection thread's back-off: not the caller's time
            threading.Thread(target=self.close, name="zk-close", daemon=True).start()
            raise Unavailable(f"cannot reach ZooKeeper at {self.hosts} (no answer in "
                              f"{time.monotonic() - started:.1f}s)") from e
        return self

    def close(self, wait: float | None = None) -> None:
        self._closing = True
        if wait is None:
            self._stop()
            return
        ending = threading.Thread(target=self._stop, name="zk-close", daemon=True)
        ending.start()
        ending.join(wait)

    def _stop(self) -> None:
        try:
            self.zk.stop()
            self.zk.close()
        except KazooException:
            pass

    @property
    def session_id(self) -> str:
        sid = self.zk.client_id
        return f"0x{sid[0]:x}" if sid else ""

    # ------------------------------------------------------------------ the retry helper
    def _call(self, method: str, path: str, *args: Any, **kw: Any) -> Any:
        """Run one kazoo call bounded by self.timeout, retrying connection loss until then."""
        return self.retrying(method, path, lambda: getattr(self.zk, method + "_async")(
            path, *args, **kw))

    def retrying(self, method: str, path: str, send: Callable[[], Any]) -> Any:
        """The retry helper: send() an async request and wait for its answer, again after a
        lost connection (with back-off), all within self.timeout. A request whose answer was
        lost may have been applied: writes go through `_write`, which recognises its own."""
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while True:
            remaining = deadline - time.monotonic()
            try:
                return send().get(timeout=max(remaining, 0.001))
            except _RETRYABLE:
                if time.monotonic() + delay >= deadline:
                    raise self._unavailable(method, path) from None
                time.sleep(delay)  # back-off between retries of a lost connection
                delay = backoff(delay)
            except _UNAVAILABLE:
                raise self._unavailable(method, path) from None
            except tuple(KAZOO_ERRORS) as e:
                raise translate(e, path) from None

    def _write(self, method: str, ops: list[TxOp], send: Callable[[], Any],
               check: Callable[[Any], Any] = lambda answer: answer) -> Any:
        """A write through the retry helper: sent again after a lost connection, its answer
        checked by check() (which raises the write's error); an error of a second sending
        is no error when the first one went through (Store.sent_again)."""
        sendings = 0

        def counted() -> Any:
            nonlocal sendings
            sendings += 1
            return send()

        try:
            return check(self.retrying(method, ops[0].path, counted))
        except StoreError as err:
            if sendings > 1 and self.sent_again(err, ops):
                return None
            raise

    def _unavailable(self, method: str, path: str) -> Unavailable:
        return Unavailable(f"ZooKeeper at {self.hosts} did not answer within {self.timeout:g}s "
                           f"({method} {path})")

    # ------------------------------------------------------------------ reads
    def get(self, path: str) -> Versioned:
        data, stat = self._call("get", path)
        owner = stat.ephemeralOwner
        return Versioned(data, stat.version, f"0x{owner:x}" if owner else "")

    def iter_many(self, paths: Iterable[str]) -> Iterator[bytes | None]:
        for found in self._iter_versioned(list(paths)):
            yield None if found is None else found.value

    def get_many_versioned(self, paths: Iterable[str]) -> list[Versioned | None]:
        return list(self._iter_versioned(list(paths)))

    def _iter_versioned(self, paths: list[str]) -> Iterator[Versioned | None]:
        """Each path's data and version in order (None when missing), read with ZooKeeper's
        multiRead (3.6+): MULTI_READ_CHUNK znodes per request, every request sent at once. A
        request per znode costs the client a wake-up of kazoo's connection thread each
        (~0.13 ms: a thousand VMs were most of `vm list`); a chunk costs about one read."""
        if not self._multi_read:
            yield from self._iter_pipelined(paths)
            return
        chunks = [paths[i:i + MULTI_READ_CHUNK] for i in range(0, len(paths), MULTI_READ_CHUNK)]
        deadline = time.monotonic() + self.timeout
        pending = []
        for chunk in chunks:
            res = self.zk.handler.async_result()
            self.zk._call(_MultiRead([self.zk.chroot + p for p in chunk]), res)
            pending.append(res)
        for chunk, res in zip(chunks, pending):
            try:
                values = res.get(timeout=max(deadline - time.monotonic(), 0.001))
            except UnimplementedError as e:   # a server without multiRead (before 3.6)
                log.info("ZooKeeper has no multiRead (%s): reading one znode per request", e)
                self._multi_read = False
                yield from self._iter_pipelined(chunk)
                continue
            except _LOST:
                yield from self._iter_pipelined(chunk)   # retries each read on its own
                continue
            for p, value in zip(chunk, values):
                if isinstance(value, Exception):
                    raise translate(value, p)
                yield value

    def _iter_pipelined(self, paths: list[str]) -> Iterator[Versioned | None]:
        """One getData per path, all sent at once (servers without multiRead)."""
        deadline = time.monotonic() + self.timeout
        try:
            pending = [self.zk.get_async(p) for p in paths]
        except _LOST:
            raise self._unavailable("get", f"{len(paths)} znodes") from None
        for p, res in zip(paths, pending):
            try:
                data, stat = res.get(timeout=max(deadline - time.monotonic(), 0.001))
                yield Versioned(data, stat.version)
            except NoNodeError:
                yield None
            except _LOST:
                # A connection blip in a bulk read: fall back to the retrying single call.
                try:
                    yield self.get(p)
                except NoNode:
                    yield None

    def child_counts(self, paths: Iterable[str]) -> list[int]:
        """How many children each path has (0 if missing), in one pipelined round."""
        paths = list(paths)
        deadline = time.monotonic() + self.timeout
        try:
            pending = [self.zk.exists_async(p) for p in paths]
            stats = [r.get(timeout=max(deadline - time.monotonic(), 0.001)) for r in pending]
        except _LOST:
            raise self._unavailable("exists", f"{len(paths)} znodes") from None
        return [s.numChildren if s else 0 for s in stats]

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
        op = TxOp("create", path, encode(value), ephemeral=ephemeral)
        self._write("create", [op], lambda: self.zk.create_async(
            path, op.data, ephemeral=ephemeral, makepath=makepath))
        return path

    def set(self, path: str, value: Any, version: int = -1) -> int:
        op = TxOp("set", path, encode(value), version)
        stat = self._write("set", [op], lambda: self.zk.set_async(path, op.data, version))
        return stat.version if stat is not None else self.get(path).version

    def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        if recursive:
            # children first, each call bounded (kazoo's own recursive delete is not)
            for child in self.children(path):
                try:
                    self.delete(f"{path.rstrip('/')}/{child}", recursive=True)
                except NoNode:
                    pass   # deleted meanwhile
        self._write("delete", [TxOp("delete", path, version=version)],
                    lambda: self.zk.delete_async(path, version))

    def transaction(self) -> "ZkTransaction":
        return ZkTransaction(self)

    # ------------------------------------------------------------------ watches
    def watch_raw(self, path: str, fn: Callable[[bytes | None, int | None], bool | None]
                  ) -> None:
        DataWatch(self.zk, path, lambda d, s: fn(d if s else None, s.version if s else None))

    def watch_children(self, path: str, fn: Callable[[list[str]], bool | None]) -> None:
        ChildrenWatch(self.zk, path, fn)

    # ------------------------------------------------------------------ recipes
    def lock(self, path: str, identifier: str) -> "ZkLock":
        return ZkLock(Lock(self.zk, path, identifier))

    def secure(self, path: str) -> int:
        """Give path and every znode below it the cluster's ACL (for a cluster created before
        it had one). Returns how many znodes were changed."""
        if self.acl is None:
            raise Conflict("no ZooKeeper identity configured (cluster.zookeeper.auth_file)")
        changed = 0
        todo = [path]
        while todo:
            current = todo.pop()
            if self._secure_one(current):
                changed += 1
            todo += [f"{current.rstrip('/')}/{c}" for c in self.children(current)]
        return changed

    def _secure_one(self, path: str) -> bool:
        acls, stat = self.retrying("get_acls", path, lambda: self.zk.get_acls_async(path))
        if list(acls) == self.acl:
            return False
        self.retrying("set_acls", path,
                      lambda: self.zk.set_acls_async(path, self.acl, stat.aversion))
        return True

    def lock_contenders(self, path: str) -> list[str]:
        try:
            return list(Lock(self.zk, path).contenders())
        except NoNodeError:
            return []
        except _LOST:
            raise self._unavailable("contenders", path) from None


class ZkLock:
    """kazoo's lock recipe: a fair queue of ephemeral sequential znodes."""

    def __init__(self, lock: Lock) -> None:
        self._lock = lock

    def acquire(self, timeout: float | None = None) -> bool:
        try:
            return bool(self._lock.acquire(blocking=True, timeout=timeout))
        except _LOST:
            raise Unavailable("lost ZooKeeper while waiting for a lock") from None
        except (LockTimeout, CancelledError):
            return False

    def cancel(self) -> None:
        self._lock.cancel()

    def release(self) -> None:
        try:
            self._lock.release()
        except KazooException:
            log.warning("could not release lock cleanly; its session's end will free it")


class ZkTransaction(Transaction):
    def __init__(self, store: ZkStore) -> None:
        super().__init__()
        self.store = store

    def _commit(self) -> None:
        def send() -> Any:
            tx = self.store.zk.transaction()
            for op in self.ops:
                if op.op == "check":
                    tx.check(op.path, op.version)
                elif op.op == "create":
                    tx.create(op.path, op.data, ephemeral=op.ephemeral)
                elif op.op == "set":
                    tx.set_data(op.path, op.data, op.version)
                else:
                    tx.delete(op.path, op.version)
            return tx.commit_async()

        self.store._write("transaction", self.ops, send, self._raise_failed)

    def _raise_failed(self, results: list[Any]) -> None:
        for op, result in zip(self.ops, results):
            if isinstance(result, Exception) and not isinstance(result, RolledBackError):
                raise translate(result, op.path)


STAT_VERSION = 4          # in a znode's stat: czxid mzxid ctime mtime version …
MULTI_READ_CHUNK = 250   # znodes per multiRead: a response stays far below jute.maxbuffer


class _MultiRead:
    """ZooKeeper's multiRead request (opcode 22) of getData operations, which kazoo lacks;
    serialized like its Transaction. Each result is the data and version, None for a missing
    znode, or kazoo's exception for another error."""
    type = 22

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def serialize(self) -> bytearray:
        b = bytearray()
        for p in self.paths:
            b.extend(MultiHeader(GetData.type, False, -1).serialize())
            b.extend(GetData(p, None).serialize())
        return b + multiheader_struct.pack(-1, True, -1)

    @classmethod
    def deserialize(cls, data: bytes, offset: int) -> list[Any]:
        results: list[Any] = []
        header, offset = MultiHeader.deserialize(data, offset)
        while not header.done:
            if header.type == GetData.type:
                value, offset = read_buffer(data, offset)
                stat = stat_struct.unpack_from(data, offset)
                offset += stat_struct.size
                results.append(Versioned(value, stat[STAT_VERSION]))
            else:   # an error result (type -1): its code
                err = int.from_bytes(data[offset:offset + 4], "big", signed=True)
                offset += 4
                results.append(None if err == NoNodeError.code else EXCEPTIONS[err]())
            header, offset = MultiHeader.deserialize(data, offset)
        return results
