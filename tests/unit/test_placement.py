from __future__ import annotations

from pvc.core.models import VM, Node
from pvc.vm import placement


def node(name: str, **kw: object) -> Node:
    base = dict(daemon_state="run", domain_state="ready", mem_total=8192, mem_free=8192,
                mem_allocated=0, mem_provisioned=0, vcpus_allocated=0, load=0.0, vms=0)
    base.update(kw)
    return Node(name=name, **base)  # type: ignore[arg-type]


def vm(name: str = "v", memory: int = 1024, **kw: object) -> VM:
    return VM(uuid=name, name=name, memory=memory, vcpus=2, **kw)  # type: ignore[arg-type]


def test_each_selector_picks_its_best_node() -> None:
    nodes = [node("a", mem_allocated=4096, mem_provisioned=1000, load=0.1, vcpus_allocated=8,
                  vms=9),
             node("b", mem_allocated=1024, mem_provisioned=9000, load=2.0, vcpus_allocated=1,
                  vms=5),
             node("c", mem_allocated=2048, mem_provisioned=5000, load=1.0, vcpus_allocated=4,
                  vms=1)]
    picks = {s: placement.choose(vm(), nodes, s).name for s in placement.SELECTORS}
    assert picks == {"mem": "b", "memprov": "a", "load": "a", "vcpus": "b", "vms": "c"}


def test_vm_selector_beats_the_cluster_default() -> None:
    nodes = [node("a", vms=0, mem_allocated=4000), node("b", vms=5)]
    assert placement.choose(vm(node_selector="vms"), nodes, "mem").name == "a"
    assert placement.choose(vm(), nodes, "mem").name == "b"


def test_ineligible_nodes_are_never_chosen() -> None:
    nodes = [node("dead", daemon_state="dead"), node("flushed", domain_state="flushed"),
             node("nohv", enable_hypervisor=False), node("full", mem_allocated=8000),
             node("self")]
    assert placement.choose(vm(), nodes, "mem", exclude=["self"]) is None
    why = placement.why_none(vm(), nodes, placement.Plan(), exclude=["self"])
    assert "dead: daemon dead" in why and "flushed: flushed" in why
    assert "nohv: hypervisor disabled" in why and "full: 192 MiB free < 1024 MiB" in why


def test_node_limit_restricts_targets() -> None:
    nodes = [node("a"), node("b", mem_allocated=4000)]
    assert placement.choose(vm(node_limit=["b"]), nodes, "mem").name == "b"


def test_planned_vms_spread_over_nodes() -> None:
    nodes = [node("a"), node("b"), node("c")]
    plan = placement.Plan()
    chosen = []
    for i in range(6):
        v = vm(f"v{i}")
        target = placement.choose(v, nodes, "mem", plan)
        plan.add(target.name, v)
        chosen.append(target.name)
    assert sorted(chosen) == ["a", "a", "b", "b", "c", "c"]


def test_plan_respects_capacity() -> None:
    nodes = [node("a", mem_total=2048, mem_free=2048)]
    plan = placement.Plan()
    first = placement.choose(vm("x"), nodes, "vms", plan)
    plan.add(first.name, vm("x"))
    plan.add(first.name, vm("y"))
    assert placement.choose(vm("z"), nodes, "vms", plan) is None


def test_a_vm_with_rbd_disks_goes_only_to_nodes_that_reach_the_storage() -> None:
    nodes = [node("plain", mem_allocated=0), node("ceph", enable_storage=True,
                                                  mem_allocated=4000)]
    disked = vm(volumes=["vms/web-disk"])
    assert placement.choose(disked, nodes, "mem").name == "ceph"
    assert placement.choose(vm(), nodes, "mem").name == "plain"
    why = placement.why_none(disked, nodes[:1], placement.Plan())
    assert why == ("no eligible node (plain: storage disabled (the VM's disks are on Ceph: "
                   "vms/web-disk))")
