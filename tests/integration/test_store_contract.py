"""The store's contract, run on both backends: the in-memory fake of the unit tier and a real
ZooKeeper (through a proxy that can cut the link or lose a write's answer). What pvc relies on
holds on both, or the fake's tests prove nothing: compare-and-set, transactions, ephemerals,
watches (ZooKeeper's: the last value always, intermediate ones maybe not), session events,
locks, and writes whose answer was lost."""
from __future__ import annotations

import threading
from typing import Any, Iterator, Protocol

import pytest

from pvc.core.errors import Unavailable
from pvc.core.store import KEEP, NodeExists, NoNode, SessionEvent, Store, VersionConflict
from pvc.core.zookeeper import ZkStore
from tests.answerdrop import AnswerDropper
from tests.fakes.store import MemoryBackend, MemoryStore
from tests.waiting import until

pytestmark = pytest.mark.integration
SESSION_TIMEOUT = 2.0


class Backend(Protocol):
    root: str

    def session(self) -> Store:
        """A new client session."""

    def lose_next_answer(self) -> None:
        """The next write reaches the store; its answer never reaches the client."""

    def answers_lost(self) -> int:
        """How many answers were lost so far (the fault did hit)."""

    def cut(self, store: Store) -> None:
        """The client's link goes down (its session lives on)."""

    def restore(self, store: Store) -> None:
        """The link is back within the session timeout."""

    def expire(self, store: Store) -> None:
        """The session ends for good; the client comes back on a new one."""

    def close(self) -> None: ...


class Memory:
    def __init__(self) -> None:
        self.backend = MemoryBackend()
        self.root = "/contract"
        self._lost = 0

    def session(self) -> Store:
        return self.backend.session().connect()

    def lose_next_answer(self) -> None:
        self.backend.answers_to_lose += 1
        self._lost += 1

    def answers_lost(self) -> int:
        return self._lost - self.backend.answers_to_lose

    def cut(self, store: Store) -> None:
        assert isinstance(store, MemoryStore)
        store.suspend()

    def restore(self, store: Store) -> None:
        assert isinstance(store, MemoryStore)
        store.resume()

    def expire(self, store: Store) -> None:
        assert isinstance(store, MemoryStore)
        store.expire()

    def close(self) -> None:
        pass


class ZooKeeper:
    def __init__(self, services: Any, root: str) -> None:
        host, port = services.zk_hosts.split(":")
        self.proxy = AnswerDropper((host, int(port)))
        self.auth = services.zk_auth
        self.root = root
        self.sessions: list[ZkStore] = []

    def session(self) -> Store:
        s = ZkStore(self.proxy.hosts, timeout=5, session_timeout=SESSION_TIMEOUT,
                    auth=self.auth).connect()
        self.sessions.append(s)
        return s

    def lose_next_answer(self) -> None:
        self.proxy.arm()

    def answers_lost(self) -> int:
        return len(self.proxy.dropped)

    def cut(self, store: Store) -> None:
        self.proxy.cut()

    def restore(self, store: Store) -> None:
        self.proxy.restore()

    def expire(self, store: Store) -> None:
        """The link down for longer than the session timeout: the servers end the session;
        the client hears it when it connects again."""
        events = _recorder(store)
        session = store.session_id
        self.proxy.cut()
        ender = self.session_outside()
        ender.wait_gone_session(session)
        ender.close()
        self.proxy.restore()
        events.wait_for(SessionEvent.NEW_SESSION)

    def session_outside(self) -> "_Outside":
        host, port = self.proxy.server
        return _Outside(ZkStore(f"{host}:{port}", timeout=5, auth=self.auth).connect(),
                        self.root)

    def close(self) -> None:
        for s in self.sessions:
            s.close()
        self.proxy.close()
        outside = self.session_outside()
        outside.store.delete(self.root, recursive=True)
        outside.close()


class _Outside:
    """A session that does not go through the proxy, to see what the servers see."""

    def __init__(self, store: ZkStore, root: str) -> None:
        self.store = store
        self.root = root

    def wait_gone_session(self, session_id: str) -> None:
        """Until the servers ended session_id: its witness znode is gone (asked, not
        watched: a watch's "missing" is also what a session that is not yet logged in sees)."""
        witness = f"{self.root}/witness-{session_id}"
        assert self.store.exists(witness)
        until("the servers to end the session", lambda: not self.store.exists(witness), 30,
              interval=0.1, tolerate=(Unavailable,))

    def close(self) -> None:
        self.store.close()


class _Events:
    def __init__(self) -> None:
        self.seen: list[SessionEvent] = []
        self.changed = threading.Condition()

    def __call__(self, event: SessionEvent) -> None:
        with self.changed:
            self.seen.append(event)
            self.changed.notify_all()

    def wait_for(self, event: SessionEvent, timeout: float = 30) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: event in self.seen, timeout), self.seen


def _recorder(store: Store) -> _Events:
    events = _Events()
    store.on_session(events)
    return events


@pytest.fixture(params=["memory", "zookeeper"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        b: Backend = Memory()
    else:
        b = ZooKeeper(request.getfixturevalue("services"), request.getfixturevalue("zk_root"))
    b.session().ensure(b.root)
    yield b
    b.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.session()


# ---------------------------------------------------------------------- compare-and-set


def test_a_stale_version_loses_and_changes_nothing(backend: Backend, store: Store) -> None:
    path = f"{backend.root}/vm"
    store.create(path, {"state": "stop"})
    seen = store.get_json_versioned(path)
    store.set(path, {"state": "start"}, version=seen.version)
    with pytest.raises(VersionConflict):
        store.set(path, {"state": "disable"}, version=seen.version)
    assert store.get_json(path) == {"state": "start"}


def test_update_never_loses_an_update(backend: Backend, store: Store) -> None:
    path = f"{backend.root}/counter"
    store.create(path, {"n": 0})
    writers = [backend.session() for _ in range(4)]

    def bump(s: Store) -> None:
        for _ in range(25):
            s.update_json(path, lambda v: {"n": v["n"] + 1}, attempts=500)

    threads = [threading.Thread(target=bump, args=(s,)) for s in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_json(path) == {"n": 100}


def test_update_keep_writes_nothing(backend: Backend, store: Store) -> None:
    path = f"{backend.root}/kept"
    store.create(path, {"n": 1})
    assert store.update(path, lambda v, tx: KEEP).version == 0
    assert store.get(path).version == 0


# ---------------------------------------------------------------------- transactions


def test_a_transaction_is_all_or_nothing_and_names_the_failing_write(backend: Backend,
                                                                     store: Store) -> None:
    store.create(f"{backend.root}/taken", "x")
    tx = store.transaction().create(f"{backend.root}/new", "1") \
        .create(f"{backend.root}/taken", "2")
    with pytest.raises(NodeExists) as err:
        tx.commit()
    assert err.value.path == f"{backend.root}/taken"
    assert not store.exists(f"{backend.root}/new")
    assert store.get_text(f"{backend.root}/taken") == "x"


def test_a_transaction_check_guards_the_others(backend: Backend, store: Store) -> None:
    store.create(f"{backend.root}/guard", "g")
    store.set(f"{backend.root}/guard", "g2")
    tx = store.transaction().check(f"{backend.root}/guard", 0) \
        .create(f"{backend.root}/guarded", "1")
    with pytest.raises(VersionConflict):
        tx.commit()
    assert not store.exists(f"{backend.root}/guarded")


# ---------------------------------------------------------------------- ephemerals


def test_an_ephemeral_belongs_to_its_session_and_goes_with_it(backend: Backend,
                                                             store: Store) -> None:
    other = backend.session()
    path = f"{backend.root}/lease"
    other.create(path, "w1", ephemeral=True)
    assert store.get(path).owner == other.session_id != store.session_id
    store.create(f"{backend.root}/persistent", "p")
    assert store.get(f"{backend.root}/persistent").owner == ""
    other.close()
    store.wait_gone(path, timeout=10)


def test_an_expired_session_loses_its_ephemerals_and_comes_back_new(backend: Backend,
                                                                    store: Store) -> None:
    events = _recorder(store)
    before = store.session_id
    store.create(f"{backend.root}/witness-{before}", "", ephemeral=True)
    backend.expire(store)
    events.wait_for(SessionEvent.NEW_SESSION)
    assert SessionEvent.EXPIRED in events.seen
    assert store.session_id != before
    assert not store.exists(f"{backend.root}/witness-{before}")
    store.create(f"{backend.root}/after", "works")   # the client serves again


def test_a_short_cut_keeps_the_session_and_its_ephemerals(backend: Backend,
                                                          store: Store) -> None:
    events = _recorder(store)
    before = store.session_id
    store.create(f"{backend.root}/mine", "", ephemeral=True)
    backend.cut(store)
    events.wait_for(SessionEvent.SUSPENDED)
    backend.restore(store)
    events.wait_for(SessionEvent.RECONNECTED)
    assert store.session_id == before
    assert store.get(f"{backend.root}/mine").owner == before


# ---------------------------------------------------------------------- watches


def test_a_watch_ends_on_the_last_value_in_order(backend: Backend, store: Store) -> None:
    """Values written in a burst: the watcher may miss some (ZooKeeper re-reads after each
    notice) but sees them in order and always the last."""
    path = f"{backend.root}/watched"
    store.create(path, {"n": 0})
    seen: list[int] = []
    last = threading.Event()

    def watch(value: Any, _version: int | None) -> bool:
        seen.append(value["n"])
        if value["n"] == 50:
            last.set()
            return False
        return True

    store.watch_data(path, watch)
    writer = backend.session()
    for n in range(1, 51):
        writer.set(path, {"n": n})
    assert last.wait(10), seen
    assert seen == sorted(set(seen)) and seen[0] == 0 and seen[-1] == 50


def test_a_watch_that_returns_false_hears_nothing_more(backend: Backend, store: Store) -> None:
    path = f"{backend.root}/once"
    calls: list[Any] = []
    store.watch_data(path, lambda v, _ver: calls.append(v) or False)
    store.create(path, "1")
    probe = threading.Event()
    store.watch_data(path, lambda v, _ver: probe.set() if v == 2 else True)
    store.set(path, 2)
    assert probe.wait(10)
    assert calls == [None]


def test_a_children_watch_sees_each_create_and_delete(backend: Backend, store: Store) -> None:
    path = f"{backend.root}/kids"
    store.ensure(path)
    writer = backend.session()
    writer.create(f"{path}/a", "")
    assert store.wait_for_children(path, lambda kids: kids == ["a"], 10) == ["a"]
    writer.create(f"{path}/b", "")
    writer.delete(f"{path}/a")
    assert store.wait_for_children(path, lambda kids: kids == ["b"], 10) == ["b"]


# ---------------------------------------------------------------------- locks


def test_a_lock_is_a_fair_queue_freed_with_its_holder(backend: Backend, store: Store) -> None:
    path = f"{backend.root}/flush-lock"
    holder = backend.session()
    first = holder.lock(path, "first")
    assert first.acquire(timeout=5)
    second = store.lock(path, "second")
    got = threading.Event()
    threading.Thread(target=lambda: second.acquire(timeout=20) and got.set(),
                     daemon=True).start()
    until("both in the lock's queue",
          lambda: store.lock_contenders(path) == ["first", "second"])
    holder.close()   # the holder's session ends without releasing
    assert got.wait(20)
    assert store.lock_contenders(path) == ["second"]
    second.release()


# ---------------------------------------------------------------------- lost answers


def test_a_create_whose_answer_was_lost_is_the_callers(backend: Backend, store: Store) -> None:
    path = f"{backend.root}/record"
    backend.lose_next_answer()
    assert store.create(path, {"id": "op1"}) == path
    assert backend.answers_lost() == 1
    assert store.get_json(path) == {"id": "op1"} and store.get(path).version == 0


def test_an_ephemeral_create_whose_answer_was_lost_is_the_callers(backend: Backend,
                                                                  store: Store) -> None:
    path = f"{backend.root}/lease"
    backend.lose_next_answer()
    store.create(path, "worker-1", ephemeral=True)
    assert backend.answers_lost() == 1
    assert store.get(path).owner == store.session_id


def test_a_versioned_set_and_a_delete_whose_answers_were_lost(backend: Backend,
                                                              store: Store) -> None:
    path = f"{backend.root}/state"
    store.create(path, "a")
    backend.lose_next_answer()
    assert store.set(path, "b", version=0) == 1
    backend.lose_next_answer()
    store.delete(path)
    assert backend.answers_lost() == 2
    assert not store.exists(path)


def test_a_transaction_whose_answer_was_lost_is_the_callers(backend: Backend,
                                                            store: Store) -> None:
    backend.lose_next_answer()
    store.transaction().create(f"{backend.root}/op", "op1") \
        .create(f"{backend.root}/busy", "op1").commit()
    assert backend.answers_lost() == 1
    assert store.get_text(f"{backend.root}/busy") == "op1"


def test_a_create_of_another_sessions_znode_still_fails(backend: Backend,
                                                        store: Store) -> None:
    """Recognising one's own write is by owner and content: someone else's znode with the
    same content is still someone else's."""
    path = f"{backend.root}/lease2"
    other = backend.session()
    other.create(path, "worker-1", ephemeral=True)
    with pytest.raises(NodeExists):
        store.create(path, "worker-1", ephemeral=True)
    assert not store.applied(store.transaction().create(path, "worker-1", ephemeral=True).ops)


def test_a_missing_znode_is_no_node(backend: Backend, store: Store) -> None:
    with pytest.raises(NoNode):
        store.get(f"{backend.root}/nothing")
    assert store.children(f"{backend.root}/nothing") == []
