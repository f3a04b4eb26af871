"""Fencing on the in-memory store and hypervisors with the real daemons and operations, and a
BMC that really cuts a node's power in that world: detection with its saving throws, the fence
(power off, confirmed), the VMs started elsewhere exactly once, and a BMC that does not answer
(nothing restarted elsewhere, the cluster degraded)."""
from __future__ import annotations

import time
from typing import Iterator

import pytest

from pvc.core.states import OpState
from pvc.node import fencing
from pvc.node.ipmi import BmcAddress, BmcError
from pvc.operations import frame
from tests.fakes.cluster import FakeCluster
from tests.waiting import until


class Power:
    """Every node's BMC: power off stops its daemon (its session goes) and its guests."""

    def __init__(self, fc: FakeCluster) -> None:
        self.fc = fc
        self.state = {n: "on" for n in fc.names}
        self.unreachable: set[str] = set()

    def bmc(self, address: BmcAddress) -> "NodeBmc":
        return NodeBmc(self, address.host)


class NodeBmc:
    def __init__(self, power: Power, node: str) -> None:
        self.power, self.node = power, node

    def _reachable(self) -> None:
        if self.node in self.power.unreachable:
            raise BmcError(f"BMC {self.node} did not answer power off within 6s")

    def power_state(self) -> str:
        self._reachable()
        return self.power.state[self.node]

    def power_off(self) -> None:
        self._reachable()
        self.power.state[self.node] = "off"
        self.power.fc.world.domains[f"fake://{self.node}"].clear()   # its guests die with it

    def power_on(self) -> None:
        self._reachable()
        self.power.state[self.node] = "on"


@pytest.fixture
def fc() -> Iterator[FakeCluster]:
    c = FakeCluster(nodes=3)
    for name in c.names:   # every node has a BMC (host = its name, for the Power above)
        c.client.store.update(c.client.schema.node(name), lambda r, _tx, n=name: {
            **r, "ipmi": {"host": n, "port": 623, "user": "admin"}})
    yield c
    c.stop()


def hang(fc: FakeCluster, name: str) -> None:
    """The node's daemon stops answering: no keepalives, its session expires."""
    daemon = fc.daemons[name]
    daemon.stop()
    assert daemon.ctx is not None
    fc.backend.expire(daemon.ctx.store.session_id)


def primary(fc: FakeCluster) -> str:
    return fc.client.store.get_text(fc.client.schema.primary) or ""


def victim(fc: FakeCluster) -> str:
    return next(n for n in fc.names if n != primary(fc))


def test_a_dead_node_is_due_only_after_its_intervals_and_saving_throws(fc: FakeCluster) -> None:
    dead = victim(fc)
    hang(fc, dead)
    watch = fencing.FenceWatch(primary(fc), intervals=6, saving_throws=2)
    nodes = fc.client.nodes()
    soon = time.time() + 1                        # a keepalive interval is 60 s here
    assert watch.due(nodes, soon) == []
    later = time.time() + 60 * 6 + 1
    assert [watch.due(nodes, later) for _ in range(3)] == [[], [], [dead]]
    assert watch.due([n for n in nodes if n.name != dead], later) == []   # back: forgotten
    assert fencing.FenceWatch(dead, 6, 0).due(nodes, later) == []         # never itself


def test_a_node_that_stopped_cleanly_is_never_fenced(fc: FakeCluster) -> None:
    name = victim(fc)
    fc.daemons[name].stop()
    fc.daemons[name].shutdown()
    watch = fencing.FenceWatch(primary(fc), intervals=1, saving_throws=0)
    assert watch.due(fc.client.nodes(), time.time() + 10_000) == []


def fence(fc: FakeCluster, power: Power, dead: str) -> dict:
    req = fencing.request(fc.client, dead, primary(fc), "test")
    try:
        frame.run(fc.contexts[primary(fc)], req.op.id, None,
                  lambda ctx, run: fencing.execute(ctx, run, bmc_for=power.bmc))
    except Exception:
        pass   # the record says how it failed
    return fc.record(req.op.id)


def test_the_fence_powers_off_then_starts_the_vms_elsewhere_once(fc: FakeCluster) -> None:
    dead = victim(fc)
    vms = [f"v{i}" for i in range(3)]
    for name in vms:
        fc.define(name, dead)
    power = Power(fc)
    hang(fc, dead)
    record = fence(fc, power, dead)
    assert record["state"] == OpState.SUCCEEDED, record
    assert power.state[dead] == "off"
    assert "3 VMs started elsewhere" in record["message"]
    node = fc.client.node(dead)
    assert (node.daemon_state, node.domain_state) == ("fenced", "flushed")
    for d in fc.daemons.values():
        if d.name != dead:
            d.reconcile_soon()
    until("the VMs running elsewhere", lambda: all(
        fc.runs_once(v) and fc.world.where(v) != [f"fake://{dead}"] for v in vms))
    assert {fc.client.vm(v).value.last_node for v in vms} == {dead}   # unflush brings them home
    steps = " ".join(h[2] for h in record["history"])
    assert "power off confirmed" in steps and "started elsewhere" in steps


def test_an_unreachable_bmc_restarts_nothing_and_degrades_the_cluster(fc: FakeCluster) -> None:
    dead = victim(fc)
    fc.define("v0", dead)
    power = Power(fc)
    power.unreachable.add(dead)
    hang(fc, dead)
    record = fence(fc, power, dead)
    assert record["state"] == OpState.FAILED
    assert "none of its VMs was started elsewhere" in record["error"]
    assert fc.client.vm("v0").value.node == dead              # left where it was
    assert fc.world.where("v0") == [f"fake://{dead}"]         # (it may still run there)
    reasons, _ = fc.client.health()
    assert any(r.startswith(f"node {dead}: fence failed") for r in reasons), reasons
    power.unreachable.clear()                                 # the retry succeeds
    assert fence(fc, power, dead)["state"] == OpState.SUCCEEDED


def test_a_node_that_came_back_is_not_fenced(fc: FakeCluster) -> None:
    name = victim(fc)
    record = fence(fc, Power(fc), name)
    assert record["state"] == OpState.SUCCEEDED
    assert record["message"] == f"{name} is run: not fenced"


def test_a_fence_rides_out_zookeeper_not_answering_once_the_node_is_off(
        fc: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fenced coordinator took its ZooKeeper member along; while the others elect a leader
    the store does not answer. The node is off: the fence waits and finishes, not fails."""
    from pvc.core.errors import Unavailable
    dead = victim(fc)
    fc.define("v0", dead)
    power = Power(fc)
    hang(fc, dead)
    store = fc.contexts[primary(fc)].cluster.store
    put, silent = store.put, [1]

    def electing(path: str, value: object, *args: object, **kw: object) -> object:
        if power.state[dead] == "off" and silent:
            silent.pop()
            raise Unavailable("ZooKeeper at zk1,zk2,zk3 did not answer within 9s (put)")
        return put(path, value, *args, **kw)
    monkeypatch.setattr(store, "put", electing)
    record = fence(fc, power, dead)
    assert not silent                                   # ZooKeeper was silent once
    assert record["state"] == OpState.SUCCEEDED, record
    assert fc.client.node(dead).daemon_state == "fenced"
    assert "1 VMs started elsewhere" in record["message"]
