from __future__ import annotations

import threading

from pvc.core.models import VM, Node
from pvc.node.flush import plan_flush, run_parallel


def node(name: str, **kw: object) -> Node:
    base = dict(daemon_state="run", domain_state="ready", mem_total=4096, mem_free=4096,
                live_migration=True)
    base.update(kw)
    return Node(name=name, **base)  # type: ignore[arg-type]


def vm(name: str, node_name: str = "hv1", **kw: object) -> VM:
    return VM(uuid=f"u-{name}", name=name, memory=512, vcpus=1, state="start",
              node=node_name, **kw)  # type: ignore[arg-type]


def test_plan_spreads_vms_and_keeps_live() -> None:
    vms = [vm(f"v{i}") for i in range(4)]
    plan = plan_flush("hv1", vms, {v.uuid for v in vms}, [node("hv1"), node("hv2"),
                                                           node("hv3")], "mem", "live")
    assert sorted(p.target for p in plan) == ["hv2", "hv2", "hv3", "hv3"]
    assert {p.method for p in plan} == {"live"}


def test_only_running_vms_are_planned() -> None:
    vms = [vm("up"), vm("down")]
    plan = plan_flush("hv1", vms, {"u-up"}, [node("hv1"), node("hv2")], "mem", "live")
    assert [p.vm.name for p in plan] == ["up"]


def test_method_none_and_no_target_are_parked_not_skipped() -> None:
    big = VM(uuid="u-big", name="big", memory=9999, vcpus=1, state="start", node="hv1")
    vms = [vm("stay", migration_method="none"), big]
    plan = {p.vm.name: p for p in plan_flush("hv1", vms, {"u-stay", "u-big"},
                                             [node("hv1"), node("hv2")], "mem", "live")}
    assert plan["stay"].target is None and plan["stay"].note == "migration method none"
    assert plan["big"].target is None and "4096 MiB free < 9999 MiB" in plan["big"].note


def test_whole_cluster_flushed_parks_everything() -> None:
    vms = [vm("a"), vm("b")]
    nodes = [node("hv1"), node("hv2", domain_state="flushed"), node("hv3", daemon_state="dead")]
    plan = plan_flush("hv1", vms, {"u-a", "u-b"}, nodes, "mem", "live")
    assert all(p.target is None for p in plan)
    assert "hv2: flushed" in plan[0].note and "hv3: daemon dead" in plan[0].note


def test_a_resumed_flush_keeps_its_targets() -> None:
    moved = vm("a", node_name="hv3")      # the first attempt already assigned it to hv3
    plan = plan_flush("hv1", [moved], {"u-a"}, [node("hv1"), node("hv2"), node("hv3")], "vms",
                      "live")
    assert plan[0].target == "hv3"


def test_hypervisor_without_live_migration_uses_shutdown() -> None:
    plan = plan_flush("hv1", [vm("a")], {"u-a"}, [node("hv1", live_migration=False),
                                                   node("hv2", live_migration=False)],
                      "mem", "live")
    assert (plan[0].target, plan[0].method) == ("hv2", "shutdown")


def test_run_parallel_respects_both_limits() -> None:
    lock = threading.Lock()
    running: dict[str, int] = {}
    peaks = {"total": 0, "per_target": 0}
    ready = threading.Barrier(3, timeout=5)

    def work(item: tuple[str, int]) -> None:
        target = item[0]
        with lock:
            running[target] = running.get(target, 0) + 1
            peaks["total"] = max(peaks["total"], sum(running.values()))
            peaks["per_target"] = max(peaks["per_target"], running[target])
        if item[1] == 0:
            ready.wait()   # the first round (one per target) must run together
        with lock:
            running[target] -= 1

    items = [(t, i) for i in range(4) for t in ("a", "b", "c")]
    run_parallel(items, lambda it: it[0], work, max_parallel=3, per_target=1)
    assert peaks == {"total": 3, "per_target": 1}
