"""Cluster objects in a real ZooKeeper: VMs, schema version, racing requests."""
from __future__ import annotations

import threading

import pytest

from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, InvalidInput, NotFound, SchemaTooNew
from pvc.operations.requests import Request
from pvc.vm import definition, lifecycle
from tests.integration.helpers import demo_xml

pytestmark = pytest.mark.integration


def test_define_stores_a_stopped_vm_found_by_name_and_uuid(cluster) -> None:
    vm = definition.define(cluster, demo_xml("web1", 256))
    assert vm.state == "stop" and vm.memory == 256 and vm.console_log
    assert cluster.vm("web1").value.uuid == vm.uuid
    assert cluster.vm(vm.uuid).value.name == "web1"
    assert "<uuid>" in cluster.vm_xml(vm.uuid)


def test_duplicate_names_and_uuids_are_refused(cluster) -> None:
    vm = definition.define(cluster, demo_xml("web1"))
    with pytest.raises(Conflict, match="a VM named 'web1' already exists"):
        definition.define(cluster, demo_xml("web1"))
    with pytest.raises(Conflict, match=f"a VM with UUID {vm.uuid} already exists"):
        definition.define(cluster, demo_xml("web2", uuid=vm.uuid))
    assert [v.name for v in cluster.vms()] == ["web1"]


def test_bad_definitions_change_nothing(cluster) -> None:
    with pytest.raises(InvalidInput):
        definition.define(cluster, "<domain><name>x</name>")
    with pytest.raises(NotFound, match="unknown node"):
        definition.define(cluster, demo_xml("web1"), node="hv9")
    with pytest.raises(InvalidInput, match="unknown selector"):
        definition.define(cluster, demo_xml("web1"), selector="best")
    assert cluster.vms() == []


def test_unknown_vm_is_not_found(cluster) -> None:
    with pytest.raises(NotFound, match="no VM named 'ghost'"):
        cluster.vm("ghost")
    with pytest.raises(NotFound, match="no VM with UUID"):
        cluster.vm("6695eb01-f6a4-8304-79aa-97f2502e193f")


def test_undefine_removes_everything_of_a_stopped_vm(cluster) -> None:
    vm = definition.define(cluster, demo_xml("web1"))
    definition.undefine(cluster, "web1")
    assert cluster.vms() == []
    assert not cluster.store.exists(cluster.schema.vm_name("web1"))
    assert not cluster.store.exists(cluster.schema.vm(vm.uuid))


def test_newer_schema_is_refused(client_config, cluster) -> None:
    cluster.store.set(cluster.schema.version, "99")
    with pytest.raises(SchemaTooNew, match="schema version 99"):
        Cluster.connect(client_config)


def test_racing_requests_on_one_vm_one_wins(client_config, cluster) -> None:
    """Two operators act on one VM at once: exactly one request is accepted, the other gets a
    clear error, and the desired state is the winner's."""
    definition.define(cluster, demo_xml("web1"), initial_state="start", allow_unknown_nodes=True,
                      node="hv1")
    others = [Cluster.connect(client_config) for _ in range(2)]
    barrier = threading.Barrier(2)
    outcomes: list[object] = [None, None]

    def act(i: int, action: str) -> None:
        barrier.wait()
        try:
            outcomes[i] = lifecycle.request(others[i], "web1", action)
        except Conflict as e:
            outcomes[i] = e

    threads = [threading.Thread(target=act, args=(0, "stop")),
               threading.Thread(target=act, args=(1, "disable"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for o in others:
        o.close()
    won = [o for o in outcomes if isinstance(o, Request)]
    lost = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert "another command won" in str(lost[0]) or "busy" in str(lost[0])
    expected = {"vm.stop": "stop", "vm.disable": "disable"}[won[0].op.kind]
    assert cluster.vm("web1").value.state == expected
    assert len(cluster.operations()) == 1


def test_prune_keeps_the_newest_ended_records(cluster) -> None:
    from pvc.core import states
    from pvc.operations import records
    ops = []
    for i in range(15):
        op = records.new_operation("vm.start", f"v{i}", f"u{i}", "hv1")
        op.created = 1000.0 + i
        if i != 0:                      # the oldest is still running: never pruned
            records.mark_done(op, "done")
        cluster.store.create(cluster.schema.operation(op.id), op.to_json())
        ops.append(op)
    assert records.prune(cluster, keep=10) == 5
    left = {o.id for o in cluster.operations()}
    assert left == {ops[0].id} | {o.id for o in ops[6:]}
    assert cluster.operation(ops[0].id).state == states.OpState.QUEUED
