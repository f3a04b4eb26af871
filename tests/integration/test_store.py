"""The ZooKeeper backend beyond the store's contract (tests/integration/test_store_contract.py):
pipelined reads, bounded calls, watches that push waits, a login lost in the middle."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from pvc.core.errors import Unavailable
from pvc.core.zookeeper import ZkStore as Store

pytestmark = pytest.mark.integration


@pytest.fixture
def store(services, zk_root):
    s = Store(services.zk_hosts, timeout=3, auth=services.zk_auth).connect()
    s.ensure(zk_root)
    yield s
    s.delete(zk_root, recursive=True)
    s.close()


def test_get_many_pipelines_and_reports_missing(store, zk_root) -> None:
    for i in range(50):
        store.create(f"{zk_root}/n{i}", str(i))
    got = store.get_many([f"{zk_root}/n{i}" for i in range(50)] + [f"{zk_root}/missing"])
    assert got[:50] == [str(i).encode() for i in range(50)] and got[50] is None


def test_get_many_reads_chunks_with_multiread_in_order(store, zk_root) -> None:
    """More znodes than one multiRead carries, missing ones and empty and large values among
    them: every value comes back in its place, and the server's multiRead was used."""
    from pvc.core.zookeeper import MULTI_READ_CHUNK
    count = 2 * MULTI_READ_CHUNK + 7
    expected: list[bytes | None] = []
    for i in range(count):
        value = b"" if i % 11 == 0 else (b"x" * 4000 if i % 97 == 0 else str(i).encode())
        if i % 5 == 3:
            expected.append(None)            # never created
            continue
        store.create(f"{zk_root}/m{i}", value)
        expected.append(value)
    assert store.get_many(f"{zk_root}/m{i}" for i in range(count)) == expected
    assert store._multi_read, "the server's multiRead was not used"
    store.set(f"{zk_root}/m1", b"again")
    versions = store.get_many_versioned([f"{zk_root}/m1", f"{zk_root}/m2", f"{zk_root}/m3"])
    assert [(v.value, v.version) if v else None for v in versions] == \
        [(b"again", 1), (b"2", 0), None]


def test_a_server_that_is_down_fails_fast_and_clearly() -> None:
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match="cannot reach ZooKeeper at 127.0.0.1:1"):
        Store("127.0.0.1:1", timeout=1.0).connect()
    assert time.monotonic() - t0 < 10


def test_wait_for_is_pushed_by_a_watch(store, zk_root) -> None:
    path = f"{zk_root}/flag"
    store.create(path, {"done": False})
    threading.Timer(0.2, lambda: store.set(path, {"done": True})).start()
    assert store.wait_for(path, lambda v: bool(v and v["done"]), timeout=10) == {"done": True}


def test_a_login_lost_in_the_middle_comes_back_as_a_new_session(
        services, zk_root, monkeypatch) -> None:
    """kazoo stops its client for good when a SASL login fails, and takes a connection
    dropped during the login (a member paused or restarted) for one: the store starts a new
    session instead, and its listeners hear of it as after an expiry."""
    from kazoo.exceptions import AuthFailedError
    from kazoo.protocol.connection import ConnectionHandler
    login = ConnectionHandler._authenticate_with_sasl
    drop_next = threading.Event()

    def dropped_once(self: ConnectionHandler, host: str, timeout: float) -> None:
        if drop_next.is_set():
            drop_next.clear()
            raise AuthFailedError("Connection dropped in SASL")   # kazoo's own words
        login(self, host, timeout)
    monkeypatch.setattr(ConnectionHandler, "_authenticate_with_sasl", dropped_once)
    s = Store(services.zk_hosts, timeout=3, auth=services.zk_auth).connect()
    events: list[str] = []
    new_session = threading.Event()

    def heard(event: object) -> None:
        events.append(str(event))
        if str(event) == "new-session":
            new_session.set()
    s.on_session(heard)
    try:
        drop_next.set()
        s.zk._connection._socket.shutdown(socket.SHUT_RDWR)   # the connection drops
        assert new_session.wait(30), events
        serves(s)                        # and the store serves again
        s.ensure(zk_root)
        assert s.exists(zk_root)
        assert not drop_next.is_set()    # the login did fail once
    finally:
        s.delete(zk_root, recursive=True)
        s.close()


def serves(s: Store, timeout: float = 30) -> None:
    """Until the store answers (a new session logs in after it connected)."""
    from pvc.core.errors import PvcError
    deadline = time.monotonic() + timeout
    while True:
        try:
            s.exists("/")
            return
        except PvcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)   # polling a store that is logging in
