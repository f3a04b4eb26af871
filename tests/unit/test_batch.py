"""Many VMs in one request (pvc.vm.batch) on the in-memory store and hypervisors: grouped by
node, placed with one plan, refused or failed by name while the others go on, resumed by a
second worker without acting twice."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from pvc.core.errors import PvcError
from pvc.core.states import OpState
from pvc.node import executors
from pvc.operations import records
from pvc.vm import batch, definition
from tests.fakes.cluster import FakeCluster, vm_xml


@pytest.fixture
def fc() -> Iterator[FakeCluster]:
    c = FakeCluster(nodes=3)
    yield c
    c.stop()


def define_stopped(fc: FakeCluster, count: int, memory: int = 256) -> list[str]:
    names = [f"b{i}" for i in range(count)]
    definition.define_many(fc.client, [(n, vm_xml(n, memory)) for n in names])
    return names


def run_all(fc: FakeCluster, req: batch.BatchRequest) -> list[dict[str, Any]]:
    """Each operation run by its node's worker, as Celery would; their ended records."""
    for op in req.ops:
        try:
            executors.run(fc.contexts[op.node], op.kind, op.id, None)
        except PvcError:
            pass   # the record says how it failed (a worker leaves this to Celery)
    return [fc.record(op.id) for op in req.ops]


def test_a_batch_start_is_one_operation_per_node_placed_with_one_plan(fc: FakeCluster) -> None:
    names = define_stopped(fc, 9, memory=2048)   # three fit on a node of 8 GiB after hv's own
    req = batch.request(fc.client, batch.select(fc.client, names), "start")
    assert sorted(op.node for op in req.ops) == ["hv1", "hv2", "hv3"]
    assert sorted(len(op.args["vms"]) for op in req.ops) == [3, 3, 3]
    assert not req.refused and req.settled is None
    for record in run_all(fc, req):
        assert record["state"] == OpState.SUCCEEDED, record
        assert record["progress"]["done"] == record["progress"]["total"] == 3
        assert set(record["progress"]["items"].values()) == {batch.DONE}
    assert all(fc.runs_once(n) for n in names)
    assert fc.client.busy() == {}


def test_what_cannot_be_done_is_refused_by_name_and_the_rest_goes_on(fc: FakeCluster) -> None:
    names = define_stopped(fc, 3)
    fc.define("running", "hv1")
    req = batch.request(fc.client, batch.select(fc.client, [*names, "running"]), "restart")
    assert set(req.refused) == set(names)   # restart takes only a VM set to start
    assert all("its state is 'stop'" in why for why in req.refused.values())
    assert [list(op.args["vms"].values()) for op in req.ops] == [["running"]]
    (record,) = run_all(fc, req)
    assert record["state"] == OpState.SUCCEEDED and fc.runs_once("running")


def test_a_stop_of_vms_that_do_not_run_ends_at_once(fc: FakeCluster) -> None:
    names = define_stopped(fc, 2)
    for n in names:   # set to start, but nothing runs them yet
        fc.client.store.update_json(fc.client.schema.vm(fc.client.vm_uuid(n)),
                                    lambda d: {**d, "state": "start"})
    req = batch.request(fc.client, batch.select(fc.client, names), "stop")
    assert req.ops == [] and req.settled is not None
    assert req.settled.state == OpState.SUCCEEDED
    assert {fc.client.vm(n).value.state for n in names} == {"stop"}


def test_a_vm_that_fails_is_named_and_the_others_are_done(fc: FakeCluster) -> None:
    names = define_stopped(fc, 4)
    req = batch.request(fc.client, batch.select(fc.client, names), "start")
    victim = next(iter(req.ops[0].args["vms"].values()))
    fc.world.faults.start_fails.add((f"fake://{req.ops[0].node}", victim))
    records_ = run_all(fc, req)
    failed = [r for r in records_ if r["state"] == OpState.FAILED]
    assert len(failed) == 1 and f"{victim}: " in failed[0]["error"]
    assert failed[0]["progress"]["items"][victim] == batch.FAILED
    assert "injected" in fc.client.vm(victim).value.failure
    assert all(fc.runs_once(n) for n in names if n != victim)
    assert fc.world.where(victim) == [] and fc.client.busy() == {}


def test_a_second_worker_skips_what_the_first_did(fc: FakeCluster) -> None:
    names = define_stopped(fc, 3)
    req = batch.request(fc.client, batch.select(fc.client, names, everything=True), "start")
    op = req.ops[0]
    first = next(iter(op.args["vms"].values()))
    # the first worker started one VM, reported it, and died
    fc.client.store.update_json(fc.client.schema.operation(op.id), lambda r: {
        **r, "state": "running", "progress": {"done": 1, "total": r["progress"]["total"],
                                              "items": {first: batch.DONE}}})
    started = []
    hv = fc.contexts[op.node].hv
    original = hv.start
    hv.start = lambda xml, uuid: started.append(uuid) or original(xml, uuid)   # type: ignore
    executors.run(fc.contexts[op.node], op.kind, op.id, None)
    assert fc.client.vm_uuid(first) not in started
    assert fc.record(op.id)["progress"]["done"] == len(op.args["vms"])


def test_a_batch_never_sent_puts_every_vm_back(fc: FakeCluster) -> None:
    names = define_stopped(fc, 3)
    req = batch.request(fc.client, batch.select(fc.client, names), "start")
    for op in req.ops:
        records.finish(fc.client, op.id, OpState.FAILED, error="not submitted", restore=True)
    assert {fc.client.vm(n).value.state for n in names} == {"stop"}
    assert {fc.client.vm(n).value.node for n in names} == {""}
    assert fc.client.busy() == {}


def test_select_refuses_unknown_names_before_anything() -> None:
    c = FakeCluster(nodes=1)
    try:
        define_stopped(c, 1)
        with pytest.raises(Exception, match="no VM named 'ghost'; nothing was changed"):
            batch.select(c.client, ["b0", "ghost"])
        assert [v.value.name for v in batch.select(c.client, ["b0", "b0"])] == ["b0"]
    finally:
        c.stop()


def test_define_many_checks_every_definition_before_storing_any(fc: FakeCluster) -> None:
    sources = [("a.xml", vm_xml("a")), ("b.xml", vm_xml("b")), ("c.xml", vm_xml("A"))]
    with pytest.raises(Exception, match="c.xml: a VM named 'a' exists: 'A' differs"):
        definition.define_many(fc.client, sources)
    assert fc.client.vms() == []
    defined = definition.define_many(fc.client, sources[:2])
    assert [vm.name for vm in defined] == ["a", "b"]
    with pytest.raises(Exception, match="b.xml: a VM named 'b' already exists"):
        definition.define_many(fc.client, [("d.xml", vm_xml("d")), ("b.xml", vm_xml("b"))])
    assert sorted(vm.name for vm in fc.client.vms()) == ["a", "b"]
