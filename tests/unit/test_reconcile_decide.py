from __future__ import annotations

from pvc.core.models import VM
from pvc.hypervisor.base import RunningDomain
from pvc.node.reconcile import decide


def vm(name: str, state: str, node: str) -> VM:
    return VM(uuid=f"u-{name}", name=name, memory=16, vcpus=1, state=state, node=node)


def running(*names: str) -> dict[str, RunningDomain]:
    return {f"u-{n}": RunningDomain(f"u-{n}", n, "running") for n in names}


def test_starts_what_should_run_here_and_stops_the_rest() -> None:
    vms = [vm("a", "start", "hv1"), vm("b", "start", "hv1"), vm("c", "start", "hv2"),
           vm("d", "stop", "hv1"), vm("e", "start", "hv2")]
    d = decide("hv1", vms, running("b", "c", "d", "stranger"), busy=set())
    assert [v.name for v in d.start] == ["a"]
    assert sorted((name, why) for _u, name, why in d.stop) == [
        ("c", "assigned to hv2"), ("d", "desired state is stop")]
    assert d.left_alone == ["stranger (not a pvc VM)"]


def test_busy_vms_are_left_to_their_operation() -> None:
    vms = [vm("a", "start", "hv1"), vm("c", "start", "hv2")]
    d = decide("hv1", vms, running("c"), busy={"u-a", "u-c"})
    assert d.start == [] and d.stop == []
    assert sorted(d.left_alone) == ["a (operation in flight)", "c (operation in flight)"]
