"""Migrations and flushes on the in-memory store and hypervisors: the real daemons and
operations, faults told to the fake hypervisor, no server at all."""
from __future__ import annotations

from typing import Iterator

import pytest

from pvc.core.states import OpState
from pvc.node import flush
from pvc.operations import records
from pvc.vm import migration
from pvc.vm.migration import Move, move_vm
from tests.fakes.cluster import FakeCluster


@pytest.fixture
def fc() -> Iterator[FakeCluster]:
    c = FakeCluster(nodes=3)
    yield c
    c.stop()


def test_a_failed_live_migration_falls_back_to_shutdown(fc: FakeCluster) -> None:
    fc.define("web1", "hv1")
    fc.world.faults.live_fails.add("web1")
    record = fc.run(migration.request(fc.client, "web1", target="hv2"))
    assert record["state"] == OpState.SUCCEEDED, record
    assert "hv1 → hv2 (shutdown" in record["message"]
    assert fc.world.where("web1") == ["fake://hv2"]
    assert fc.client.vm("web1").value.node == "hv2"
    assert fc.client.vm("web1").value.last_node == "hv1"


def test_forced_live_that_fails_keeps_the_vm_on_its_source(fc: FakeCluster) -> None:
    fc.define("web1", "hv1")
    fc.world.faults.live_fails.add("web1")
    record = fc.run(migration.request(fc.client, "web1", target="hv2", force_live=True))
    assert record["state"] == OpState.FAILED
    assert "injected failure of web1" in record["error"]
    assert fc.world.where("web1") == ["fake://hv1"]
    vm = fc.client.vm("web1").value
    assert (vm.node, vm.last_node) == ("hv1", "")          # settled back where it runs
    assert "vm.migrate" in vm.failure
    assert fc.client.vm_operation(vm.uuid) is None         # not left busy


def test_a_migration_overrunning_its_time_limit_is_aborted(fc: FakeCluster) -> None:
    fc.define("slow", "hv1")
    fc.world.faults.live_hangs.add("slow")
    record = fc.run(migration.request(fc.client, "slow", target="hv3", force_live=True,
                                      timeout=0.2))
    assert record["state"] == OpState.FAILED
    assert "did not finish within 0.2s and was aborted" in record["error"]
    assert fc.world.where("slow") == ["fake://hv1"]
    assert fc.client.vm("slow").value.node == "hv1"


def test_settle_follows_the_hypervisors_not_the_plan(fc: FakeCluster) -> None:
    vm = fc.define("web1", "hv1")
    nodes = {n.name: n for n in fc.client.nodes()}
    ctx = fc.contexts["hv1"]
    # the record says hv2 (a move that failed half-way), the hypervisors say hv1
    fc.client.store.update_json(fc.client.schema.vm(vm.uuid),
                                lambda d: {**d, "node": "hv2", "last_node": "hv1"})
    migration.settle(ctx, vm.uuid, {"last_node": ""}, nodes["hv1"], nodes["hv2"])
    settled = fc.client.vm("web1").value
    assert (settled.node, settled.last_node) == ("hv1", "")


def test_a_failed_start_on_the_target_starts_it_again_on_the_source(fc: FakeCluster) -> None:
    vm = fc.define("web1", "hv1")
    fc.world.faults.start_fails.add(("fake://hv2", "web1"))
    nodes = {n.name: n for n in fc.client.nodes()}
    with pytest.raises(Exception, match="started it again on hv1"):
        move_vm(fc.contexts["hv1"], Move(vm, nodes["hv1"], nodes["hv2"], "shutdown"),
                lambda _m: None)
    assert fc.world.where("web1") == ["fake://hv1"]


def test_flush_with_one_failing_vm_names_it_and_moves_the_rest(fc: FakeCluster) -> None:
    for i in range(4):
        fc.define(f"v{i}", "hv1")
    fc.world.faults.live_fails.add("v2")
    fc.world.faults.start_fails.update({("fake://hv2", "v2"), ("fake://hv3", "v2")})
    record = fc.run(flush.request(fc.client, "hv1", "flush"))
    assert record["state"] == OpState.FAILED
    assert "v2:" in record["error"] and "(hv1 stays flushing)" in record["error"]
    assert fc.domain_state("hv1") == "flushing"
    for i in (0, 1, 3):
        assert fc.world.where(f"v{i}") != ["fake://hv1"] and fc.runs_once(f"v{i}")
    assert fc.world.where("v2") == ["fake://hv1"]            # back where it was, once
    assert fc.client.busy() == {}                            # no VM left busy


def test_flush_cancelled_midway_stops_after_the_moves_in_flight(fc: FakeCluster) -> None:
    for i in range(4):
        fc.define(f"v{i}", "hv1")
    req = flush.request(fc.client, "hv1", "flush", max_parallel=1)
    moved: list[str] = []

    def cancel_after_first(name: str) -> None:
        moved.append(name)
        if len(moved) == 1:
            records.cancel(fc.client, req.op.id)

    fc.world.faults.before_migrate = cancel_after_first
    record = fc.run(req)
    assert record["state"] == OpState.CANCELLED, record
    assert moved == ["v0"]                                   # nothing started after the cancel
    assert "3 not moved" in record["message"]
    assert fc.domain_state("hv1") == "flushing"
    assert all(fc.runs_once(f"v{i}") for i in range(4))
    assert fc.client.busy() == {}


def test_flush_then_unflush_brings_every_vm_home(fc: FakeCluster) -> None:
    for i in range(3):
        fc.define(f"v{i}", "hv1")
    assert fc.run(flush.request(fc.client, "hv1", "flush"))["state"] == OpState.SUCCEEDED
    assert fc.domain_state("hv1") == "flushed"
    assert all(fc.world.where(f"v{i}") != ["fake://hv1"] for i in range(3))
    assert fc.run(flush.request(fc.client, "hv1", "unflush"))["state"] == OpState.SUCCEEDED
    assert fc.domain_state("hv1") == "ready"
    assert all(fc.world.where(f"v{i}") == ["fake://hv1"] for i in range(3))


def test_a_vm_reported_on_two_nodes_is_refused_until_resolved(fc: FakeCluster) -> None:
    fc.define("twin", "hv1")
    fc.world.duplicate("twin", "fake://hv2")
    fc.client.store.wait_for(fc.client.schema.node_field("hv2", "domains"), bool, 5)
    from pvc.vm import lifecycle
    with pytest.raises(Exception, match="runs on several nodes"):
        lifecycle.request(fc.client, "twin", "restart")


def test_a_flush_whose_session_expires_stops_new_moves_and_fails_cleanly(
        fc: FakeCluster) -> None:
    """The flush lock went with the session: no move starts after it; the moves done stay
    done, the others stay where they are, and nothing stays claimed."""
    for i in range(4):
        fc.define(f"v{i}", "hv1")
    worker = fc.contexts["hv1"]
    moved: list[str] = []

    def expire_after_first(name: str) -> None:
        moved.append(name)
        if len(moved) == 1:
            worker.store.expire()   # type: ignore[attr-defined]

    fc.world.faults.before_migrate = expire_after_first
    record = fc.run(flush.request(fc.client, "hv1", "flush", max_parallel=1))
    assert record["state"] == OpState.FAILED
    assert "lost the ZooKeeper session holding the flush lock" in record["error"]
    assert "3 not moved" in record["error"] and "(hv1 stays flushing)" in record["error"]
    assert moved == ["v0"]
    assert all(fc.runs_once(f"v{i}") for i in range(4))
    assert fc.client.busy() == {}
    assert fc.client.store.children(fc.client.schema.vm_operations) == []


def test_a_worker_registers_again_on_a_new_session(fc: FakeCluster) -> None:
    worker = fc.contexts["hv2"]
    assert fc.client.node("hv2").workers == 1
    worker.store.expire()   # type: ignore[attr-defined]
    assert fc.client.node("hv2").workers == 1


def test_a_resumed_flush_finishes_a_move_its_dead_worker_left_half_done(
        fc: FakeCluster) -> None:
    """The first attempt shut v0 down on hv1 and died before starting it on hv2: the next
    attempt starts it there (it runs nowhere, should run, and left hv1 with this flush)."""
    vms = [fc.define(f"v{i}", "hv1") for i in range(2)]
    fc.client.store.update_json(fc.client.schema.vm(vms[0].uuid),
                                lambda d: {**d, "node": "hv2", "last_node": "hv1"})
    fc.contexts["hv1"].hv.destroy(vms[0].uuid)
    fc.client.store.wait_for(fc.client.schema.node_field("hv1", "domains"),
                             lambda d: vms[0].uuid not in (d or {}), 5)
    record = fc.run(flush.request(fc.client, "hv1", "flush"))
    assert record["state"] == OpState.SUCCEEDED, record
    assert fc.world.where("v0") == ["fake://hv2"]
    assert fc.runs_once("v1") and fc.world.where("v1") != ["fake://hv1"]


def test_a_worker_registers_under_a_name_its_old_session_cannot_take_away(
        fc: FakeCluster) -> None:
    """After an expiry the servers delete the old session's znodes when they get to them, at
    times after the new session registered: the registration is named for its session, so the
    old one going late leaves the new one (the faults tier saw every worker unregistered)."""
    worker = fc.contexts["hv2"]
    path = fc.client.schema.node_workers("hv2")
    before = fc.client.store.children(path)
    worker.store.expire()   # type: ignore[attr-defined]
    after = fc.client.store.children(path)
    assert len(after) == 1 and set(after).isdisjoint(before), (before, after)
    assert after[0].endswith(":" + worker.store.session_id)
