"""Why the cluster is degraded: each rule on a snapshot."""
from __future__ import annotations

from pvc.core.health import Snapshot, reasons
from pvc.core.models import VM, Node, Operation

NOW = 1000.0


def node(name: str, **kw: object) -> Node:
    base: dict[str, object] = dict(daemon_state="run", workers=2)
    base.update(kw)
    return Node(name=name, **base)  # type: ignore[arg-type]


def vm(name: str, where: str = "hv1", state: str = "start") -> VM:
    return VM(uuid=f"u-{name}", name=name, memory=64, vcpus=1, state=state, node=where)


def op(op_id: str, state: str, age: float) -> Operation:
    return Operation(id=op_id, kind="vm.start", target="web", target_id="u-web", node="hv1",
                     task="pvc.vm.start", state=state, created=NOW - age,
                     history=[[NOW - age, state, ""]])


def snap(nodes: list[Node], vms: list[VM] = [], ops: list[Operation] = [],
         busy: dict[str, str] | None = None, executors: set[str] | None = None) -> Snapshot:
    return Snapshot(nodes, vms, ops, busy or {}, executors or set(), NOW)


def check(s: Snapshot) -> list[str]:
    return reasons(s, stuck_after=30, drift_grace=15)


def test_a_running_cluster_is_healthy() -> None:
    running = {"u-web": {"name": "web", "state": "running"}}
    assert check(snap([node("hv1", domains=running), node("hv2")], [vm("web")])) == []


def test_a_node_without_workers_or_with_a_dead_daemon_degrades_it() -> None:
    found = check(snap([node("hv1", workers=0), node("hv2", daemon_state="dead")]))
    assert found == ["node hv1: no running worker, it cannot run operations",
                     "node hv2: daemon dead"]


def test_operations_stuck_without_worker_or_executor() -> None:
    ops = [op("a", "queued", 45), op("b", "running", 60), op("c", "running", 60),
           op("d", "queued", 5)]
    found = check(snap([node("hv1")], ops=ops, executors={"c"}))
    assert found == ["operation a (vm.start web) queued for 45s: no worker of hv1 took it",
                     "operation b (vm.start web) running for 60s with no live executor"]


def test_vms_in_the_wrong_place_twice_or_unwatched() -> None:
    web = {"u-web": {"name": "web", "state": "running"}}
    nodes = [node("hv1", domains=web), node("hv2", domains=web),
             node("hv3", daemon_state="dead"),
             node("hv4", domains={"u-db": {"name": "db", "state": "running"}})]
    found = check(snap(nodes, [vm("web"), vm("db", "hv2"), vm("mail", "hv3")]))
    assert "VM web runs on several nodes: hv1, hv2" in found
    assert "VM db runs on hv4, recorded on hv2" in found
    assert "VM mail should run on hv3, whose daemon is not running" in found


def test_drift_counts_only_after_its_grace_and_unknown_domains_are_named() -> None:
    drift = {"u-a": {"name": "a", "why": "should run here: crash loop", "since": NOW - 20},
             "u-b": {"name": "b", "why": "should run here: crash loop", "since": NOW - 5}}
    stray = {"x": {"name": "hand-made", "state": "running"}}
    found = check(snap([node("hv1", drift=drift, domains=stray)], [vm("a"), vm("b")]))
    assert found == ["VM a on hv1: should run here: crash loop (for 20s)",
                     "node hv1 runs domains pvc does not know: hand-made"]


def test_a_bmc_that_lets_anyone_in_degrades_the_cluster() -> None:
    sound = node("hv1", bmc={"checked": NOW, "problems": []})
    open_bmc = node("hv3", bmc={"checked": NOW, "problems": [
        "accepts unauthenticated IPMI (cipher suite 0)"]})
    assert check(snap([sound, open_bmc])) == [
        "node hv3: its BMC accepts unauthenticated IPMI (cipher suite 0): fencing it proves "
        "nothing (README, Security: what to set on a BMC)"]


def test_services_around_pvc_that_do_not_serve_degrade_it() -> None:
    quiet = node("hv1", services={})
    loud = node("hv2", services={"powerdns": "PowerDNS does not answer on 10.0.0.2:53: check",
                                 "patroni": "Patroni's REST API does not answer on 10.0.0.2:8008"})
    gone = node("hv3", daemon_state="dead", services={"powerdns": "stale"})
    assert check(snap([quiet, loud, gone])) == [
        "node hv2: Patroni's REST API does not answer on 10.0.0.2:8008",
        "node hv2: PowerDNS does not answer on 10.0.0.2:53: check",
        "node hv3: daemon dead"]
