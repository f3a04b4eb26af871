"""The operator's changes on the in-memory store and hypervisors, with the real daemons: a VM's
definition, metadata and name changed after define (each recorded, before and after), the
cluster in maintenance (nothing restarts on its own) and a cordoned node (no new VMs)."""
from __future__ import annotations

from typing import Iterator

import pytest

from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.states import OpState
from pvc.node import fencing, flush
from pvc.operations import frame, holds
from pvc.vm import changes, lifecycle, placement
from tests.fakes.cluster import FakeCluster, vm_xml
from tests.waiting import until


@pytest.fixture
def fc() -> Iterator[FakeCluster]:
    c = FakeCluster(nodes=3)
    yield c
    c.stop()


def with_uuid(xml: str, uuid: str) -> str:
    return xml.replace("<memory", f"<uuid>{uuid}</uuid><memory", 1)


# ---------------------------------------------------------------------- modify

def test_modify_stores_the_new_definition_and_records_before_after(fc: FakeCluster) -> None:
    vm = fc.define("web1", "hv1", memory=256)
    change = changes.modify(fc.client, "web1", vm_xml("web1", 512), reason="more memory")
    assert change.running_on == ["hv1"]
    stored = fc.client.vm("web1").value
    assert (stored.uuid, stored.memory) == (vm.uuid, 512)        # no <uuid>: the VM's kept
    assert "512" in fc.client.vm_xml(vm.uuid)
    record = fc.record(change.op.id)
    assert (record["kind"], record["state"], record["reason"]) == (
        "vm.modify", OpState.SUCCEEDED, "more memory")
    assert record["args"]["before"]["memory"] == 256 and record["args"]["after"]["memory"] == 512
    assert "-<domain" in record["args"]["diff"] and "+<domain" in record["args"]["diff"]
    assert "takes effect at its next start" in record["message"]
    assert fc.world.where("web1") == ["fake://hv1"]               # nothing restarted


def test_modify_refuses_another_name_or_uuid_and_an_unchanged_definition(
        fc: FakeCluster) -> None:
    vm = fc.define("web1", "hv1")
    with pytest.raises(InvalidInput, match="pvc vm rename web1 web2"):
        changes.modify(fc.client, "web1", vm_xml("web2"))
    other = "00000000-0000-4000-8000-000000000001"
    with pytest.raises(InvalidInput, match="cannot change a VM's UUID"):
        changes.modify(fc.client, "web1", with_uuid(vm_xml("web1", 512), other))
    with pytest.raises(InvalidInput, match="nothing to change"):
        changes.modify(fc.client, "web1", fc.client.vm_xml(vm.uuid))
    with pytest.raises(InvalidInput, match="malformed"):
        changes.modify(fc.client, "web1", "<domain>")
    assert fc.client.vm("web1").value.memory == 256


def test_a_dry_run_describes_and_changes_nothing(fc: FakeCluster) -> None:
    vm = fc.define("web1", "hv1")
    before = fc.client.vm_xml(vm.uuid)
    preview = changes.modify(fc.client, "web1", vm_xml("web1", 1024), dry_run=True)
    assert "1024" in preview.op.args["diff"]
    assert fc.client.vm_xml(vm.uuid) == before
    assert all(o.kind != "vm.modify" for o in fc.client.operations())


def test_a_restart_applies_the_modified_definition(fc: FakeCluster) -> None:
    vm = fc.define("web1", "hv1", memory=256)
    changes.modify(fc.client, "web1", vm_xml("web1", 768))
    record = fc.run(lifecycle.request(fc.client, "web1", "restart"))
    assert record["state"] == OpState.SUCCEEDED
    assert "768" in fc.contexts["hv1"].node_xml(vm.uuid)
    assert fc.runs_once("web1")


# ---------------------------------------------------------------------- meta and rename

def test_meta_changes_placement_fields_only(fc: FakeCluster) -> None:
    vm = fc.define("web1", "hv1")
    xml = fc.client.vm_xml(vm.uuid)
    change = changes.meta(fc.client, "web1", "pin it", autostart=True,
                          node_limit=["hv2", "hv3"], migration_method="shutdown")
    stored = fc.client.vm("web1").value
    assert (stored.autostart, stored.node_limit, stored.migration_method) == (
        True, ["hv2", "hv3"], "shutdown")
    assert fc.client.vm_xml(vm.uuid) == xml
    assert change.op.args["before"]["node_limit"] == [] and "outside its new node limit" in \
        change.op.message
    assert fc.world.where("web1") == ["fake://hv1"]                    # nothing moved
    with pytest.raises(NotFound, match="hv9"):
        changes.meta(fc.client, "web1", node_limit=["hv9"])
    with pytest.raises(InvalidInput, match="nothing to change"):
        changes.meta(fc.client, "web1")


def test_rename_a_stopped_vm_only(fc: FakeCluster) -> None:
    vm = fc.define("web1", "hv1")
    with pytest.raises(Conflict, match="stop it first"):
        changes.rename(fc.client, "web1", "web2")
    assert fc.run(lifecycle.request(fc.client, "web1", "stop"))["state"] == OpState.SUCCEEDED
    fc.define("db1", "hv2")
    with pytest.raises(Conflict, match="already exists"):
        changes.rename(fc.client, "web1", "db1")
    with pytest.raises(InvalidInput):
        changes.rename(fc.client, "web1", "../vms")
    change = changes.rename(fc.client, "web1", "web2", "new role")
    assert fc.client.vm("web2").value.uuid == vm.uuid
    assert "<name>web2</name>" in fc.client.vm_xml(vm.uuid)
    with pytest.raises(NotFound):
        fc.client.vm("web1")
    assert change.op.args == {"before": {"name": "web1"}, "after": {"name": "web2"}}


# ---------------------------------------------------------------------- maintenance

def crash(fc: FakeCluster, name: str, node: str) -> None:
    """The guest dies behind pvc's back (its domain is gone)."""
    fc.world.hypervisor(f"fake://{node}").destroy(fc.client.vm(name).value.uuid)


def drift_says(fc: FakeCluster, node: str, words: str) -> bool:
    return any(words in d.get("why", "") for d in fc.client.node(node).drift.values())


def test_in_maintenance_a_crashed_vm_stays_down_until_maintenance_ends(
        fc: FakeCluster) -> None:
    fc.define("web1", "hv1")
    holds.maintenance_on(fc.client, "kernel upgrades")
    held = fc.client.maintenance()
    assert held is not None and held["reason"] == "kernel upgrades" and "@" in held["by"]
    crash(fc, "web1", "hv1")
    fc.daemons["hv1"].reconcile_soon()
    until("the drift says why", lambda: drift_says(fc, "hv1", "maintenance"))
    assert fc.world.where("web1") == []
    with pytest.raises(Conflict, match="already in maintenance"):
        holds.maintenance_on(fc.client)
    holds.maintenance_off(fc.client)
    until("web1 restarted", lambda: fc.world.where("web1") == ["fake://hv1"])
    kinds = [o.kind for o in fc.client.operations()]
    assert kinds.count("cluster.maintenance") == 2
    with pytest.raises(Conflict, match="not in maintenance"):
        holds.maintenance_off(fc.client)


def test_in_maintenance_no_fence_is_asked_or_carried_out(fc: FakeCluster) -> None:
    primary = fc.client.store.get_text(fc.client.schema.primary)
    dead = next(n for n in fc.names if n != primary)
    fc.client.store.update(fc.client.schema.node(dead), lambda r, _tx: {
        **r, "ipmi": {"host": dead, "port": 623, "user": "admin"}})
    daemon = fc.daemons[dead]
    daemon.stop()
    assert daemon.ctx is not None
    fc.backend.expire(daemon.ctx.store.session_id)
    until("the node dead", lambda: fc.client.node(dead).daemon_state == "dead")
    watch = fencing.FenceWatch(str(primary), intervals=0, saving_throws=0)
    asked: list[str] = []
    holds.maintenance_on(fc.client)
    assert fencing.fence_duty(fc.client, fc.contexts[str(primary)].config, watch,
                              lambda req: asked.append(req.op.id)) == ""
    assert asked == [] and watch.suspects == {}
    req = fencing.request(fc.client, dead, str(primary), "asked before maintenance")
    frame.run(fc.contexts[str(primary)], req.op.id, None, lambda ctx, run: fencing.execute(
        ctx, run, bmc_for=lambda _a: pytest.fail("no BMC may be called")))  # type: ignore
    assert "not fenced: the cluster is in maintenance" in fc.record(req.op.id)["message"]
    holds.maintenance_off(fc.client)        # over: the dead node is fenced as it would be
    assert fencing.fence_duty(fc.client, fc.contexts[str(primary)].config, watch,
                              lambda req: asked.append(req.op.id)).startswith(f"fencing {dead}")
    assert len(asked) == 1


# ---------------------------------------------------------------------- cordon

def test_a_cordoned_node_takes_no_new_vms_and_keeps_its_own(fc: FakeCluster) -> None:
    fc.define("web1", "hv2")
    holds.cordon(fc.client, "hv2", "disk errors")
    node = fc.client.node("hv2")
    assert node.cordon["reason"] == "disk errors" and not node.is_target()
    assert "cordoned" in placement.why_none(
        fc.client.vm("web1").value, [node], placement.Plan())
    assert fc.world.where("web1") == ["fake://hv2"]                  # nothing moved
    fc.define("db1", "hv3")
    record = fc.run(flush.request(fc.client, "hv3", "flush"))
    assert record["state"] == OpState.SUCCEEDED, record
    assert fc.world.where("db1") == ["fake://hv1"]                   # not to hv2
    with pytest.raises(Conflict, match="already cordoned"):
        holds.cordon(fc.client, "hv2")
    fc.run(flush.request(fc.client, "hv2", "flush"))
    with pytest.raises(Conflict, match="uncordon it first"):
        flush.request(fc.client, "hv2", "unflush")
    holds.uncordon(fc.client, "hv2")
    assert fc.client.node("hv2").cordon == {}


# ---------------------------------------------------------------------- JSON times

def test_json_times_are_iso_8601_with_a_zone_and_come_back() -> None:
    from pvc.core.timefmt import times_as_epoch, times_as_text
    record = {"created": 1764563785.25, "finished": 0.0, "attempts": 2, "changed": 3,
              "history": [[1764563785.5, "queued", "submitted"]],
              "progress": {"items": {"a": "moved"}}, "fence": {"at": 1764563786.0}}
    shown = times_as_text(record)
    assert shown["created"] == "2025-12-01T04:36:25.250000+00:00"
    assert shown["finished"] is None and shown["attempts"] == 2 and shown["changed"] == 3
    assert shown["history"][0][0] == "2025-12-01T04:36:25.500000+00:00"
    assert shown["fence"]["at"].endswith("+00:00")
    back = times_as_epoch(shown)
    assert back["created"] == 1764563785.25 and back["history"][0][0] == 1764563785.5


# ---------------------------------------------------------------------- progress

def test_the_last_progress_of_a_burst_is_written_without_a_later_one(fc: FakeCluster) -> None:
    """A flush reports several steps at once, then one migration runs for minutes: the record
    (and Flower) must show that migration, not the step before it."""
    from pvc.operations.runner import Runner
    req = flush.request(fc.client, "hv1", "flush")
    ctx = fc.contexts["hv1"]
    with Runner(ctx.cluster, req.op.id) as run:
        run.running()
        for step in ("flushing 2 VMs", "web1: queued", "web1: migrating to hv2 (live)"):
            run.progress(step, done=0, total=2)
        fc.client.store.wait_for(fc.client.schema.operation(req.op.id),
                                 lambda r: r["message"] == "web1: migrating to hv2 (live)", 5)
        run.succeed("flushed")
    record = fc.record(req.op.id)
    assert (record["state"], record["message"]) == (OpState.SUCCEEDED, "flushed")


def test_a_daemon_restarted_in_maintenance_starts_nothing_on_its_own(fc: FakeCluster) -> None:
    fc.define("web1", "hv1")
    holds.maintenance_on(fc.client)
    fc.daemons["hv1"].stop()
    crash(fc, "web1", "hv1")
    fc.start_node("hv1")                                 # its start-up reconcile holds too
    fc.daemons["hv1"].reconcile_soon()
    until("the drift says why", lambda: drift_says(fc, "hv1", "maintenance"))
    assert fc.world.where("web1") == []
    holds.maintenance_off(fc.client)
    until("web1 started", lambda: fc.world.where("web1") == ["fake://hv1"])


def test_a_name_that_differs_only_in_case_is_refused(fc) -> None:
    from pvc.core.errors import Conflict
    from pvc.vm import changes, definition
    from tests.fakes.cluster import vm_xml
    definition.define(fc.client, vm_xml("web1"))
    with pytest.raises(Conflict, match="'Web1' differs from it only in case"):
        definition.define(fc.client, vm_xml("Web1"))
    definition.define(fc.client, vm_xml("db1"))
    with pytest.raises(Conflict, match="only in case"):
        changes.rename(fc.client, "db1", "WEB1")
    changes.rename(fc.client, "web1", "Web1")            # its own name, recased: fine
    assert sorted(v.name for v in fc.client.vms()) == ["Web1", "db1"]


def test_node_info_says_what_the_daemons_last_loop_did(fc: FakeCluster) -> None:
    fc.define("loop1", "hv1")
    fc.daemons["hv1"]._tick()   # a keepalive comes (every 60 s in the fakes)
    said = fc.client.node("hv1").loop["said"]
    assert said.startswith("1 domains run here; nothing to fix; ")
    assert said.endswith(("a secondary", "the primary"))
