"""Fencing on the fault sandbox, against its real BMCs (ipmi_sim per node, whose power really
is the node's): a node's daemon hung, a node's processes all gone, its BMC unreachable, the
primary itself dying, two nodes dying at once. After each: every VM runs exactly once (asked of
every libvirtd that runs), the fence records are complete, and once powered on and unflushed
the cluster is as it was."""
from __future__ import annotations

import signal
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

import pytest

from pvc.core.timefmt import times_as_epoch
from tests.faults.conftest import Faults, until

pytestmark = pytest.mark.faults
FENCE_WAIT = 90    # detection (4 missed keepalives, 2 more checks) plus the fence itself
NODE_PROGRAMS = ("libvirtd", "node", "worker", "tailer")


def node(f: Faults, name: str) -> dict[str, Any]:
    return f.pvc.json("node", "info", name)


def power(f: Faults, name: str) -> str:
    return f.power(name)


def status(f: Faults) -> dict[str, Any]:
    return f.pvc.cluster_status()


def fence_records(f: Faults, name: str) -> list[dict[str, Any]]:
    """Its fence records, times as epoch seconds."""
    return [o for o in times_as_epoch(f.pvc.json("task", "list", "--limit", "1000"))
            if o["kind"] == "node.fence" and o["target"] == name]


def the_fence(f: Faults, name: str, began: float) -> dict[str, Any]:
    """The one fence of the node since `began` that succeeded. A fence that powers off a
    coordinator takes its ZooKeeper member along; when that member led the ensemble, the
    fence's own session may expire before it ends and the primary fences again: an earlier
    attempt may be there, failed and saying why, never a second success."""
    records = [r for r in fence_records(f, name) if r["created"] >= began]
    done = [r for r in records if r["state"] == "succeeded"]
    assert len(done) == 1, records
    assert all(r["state"] == "failed" and r["error"] for r in records if r is not done[0]), \
        records
    return done[0]


def running_where(f: Faults, alive: list[str]) -> dict[str, list[str]]:
    """Every VM and the nodes whose libvirtd runs it, asking only nodes that are powered."""
    found: dict[str, list[str]] = {}
    for n in alive:
        for dom in f.hv(n).running().values():
            found.setdefault(dom.name, []).append(n)
    return found


def fenced(f: Faults, name: str) -> None:
    until(f"{name} fenced", lambda: node(f, name)["daemon_state"] == "fenced", FENCE_WAIT)
    assert power(f, name) == "off"
    assert node(f, name)["domain_state"] == "flushed"


def vms_once_on(f: Faults, alive: list[str]) -> None:
    """Every VM that should run runs exactly once, on the nodes still powered."""
    def ok() -> bool:
        where = running_where(f, alive)
        return all(len(where.get(vm, [])) == 1 for vm in f.vm_names())
    until("every VM running once on the powered nodes", ok, FENCE_WAIT)


@contextmanager
def hung(f: Faults, program: str) -> Iterator[int]:
    """SIGSTOP for the program; SIGCONT afterwards if it still exists (a fence kills it)."""
    pid = f.signal(program, signal.SIGSTOP)
    try:
        yield pid
    finally:
        try:
            import os
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass


def primary(f: Faults) -> str:
    return status(f)["primary"]


def a_secondary(f: Faults) -> str:
    return next(n for n in f.nodes if n != primary(f))


def test_a_hung_daemon_is_fenced_and_its_vms_run_once_elsewhere(cluster_ok: Faults) -> None:
    f = cluster_ok
    began = time.time()
    dead = a_secondary(f)
    alive = [n for n in f.nodes if n != dead]
    home = sorted(vm for vm, nodes in f.where().items() if nodes == [dead])
    assert home
    with hung(f, f"node-{dead}"):
        fenced(f, dead)
        vms_once_on(f, alive)
    record = the_fence(f, dead, began)
    # run by the primary of that moment: the role may have moved since, when the fenced
    # coordinator's ZooKeeper member led the ensemble (the primary cannot tell the election
    # from being cut off, and lets go; see Production layout)
    assert record["node"] in f.coordinators and record["node"] != dead, record
    assert f"{len(home)} VMs started elsewhere" in record["message"]
    steps = " ".join(h[2] for h in record["history"])
    assert "power off confirmed by its BMC" in steps
    assert {v["name"] for v in f.pvc.json("vm", "list") if v["last_node"] == dead} == set(home)
    f.bring_back(dead)
    assert sorted(vm for vm, nodes in f.where().items() if nodes == [dead]) == home


def test_a_node_whose_processes_all_hang_is_fenced(cluster_ok: Faults) -> None:
    """The whole node stops answering (libvirtd and its guests too, not only the daemon); the
    supervisor sees nothing to restart. The power-off ends it."""
    f = cluster_ok
    dead = a_secondary(f)
    with ExitStack() as stack:
        for program in NODE_PROGRAMS:
            stack.enter_context(hung(f, f"{program}-{dead}"))
        fenced(f, dead)
        vms_once_on(f, [n for n in f.nodes if n != dead])
    f.bring_back(dead)


def test_an_unreachable_bmc_restarts_nothing_elsewhere(cluster_ok: Faults) -> None:
    f = cluster_ok
    dead = a_secondary(f)
    home = sorted(vm for vm, nodes in f.where().items() if nodes == [dead])
    with hung(f, f"bmc-{dead}"), hung(f, f"node-{dead}"):
        until("a failed fence recorded", lambda: any(
            o["state"] == "failed" for o in fence_records(f, dead)), FENCE_WAIT)
        failed = next(o for o in fence_records(f, dead) if o["state"] == "failed")
        assert "none of its VMs was started elsewhere" in failed["error"]
        assert any(r.startswith(f"node {dead}: fence failed") for r in status(f)["reasons"])
        where = f.where()
        assert all(where[vm] == [dead] for vm in home)        # still there, once
        assert node(f, dead)["daemon_state"] == "dead"
    # the BMC and the daemon are back: the daemon lives again, or a retry fenced it first;
    # once no fence is in flight, the cluster comes back whole either way
    until("the node alive or fenced, no fence in flight", lambda: node(f, dead)[
        "daemon_state"] in ("run", "fenced") and all(
        o["state"] in ("succeeded", "failed", "cancelled", "terminated")
        for o in fence_records(f, dead)), FENCE_WAIT)
    if node(f, dead)["daemon_state"] == "fenced" or power(f, dead) == "off":
        f.bring_back(dead)
    f.settled()


def test_a_dead_primary_is_replaced_then_fenced(cluster_ok: Faults) -> None:
    f = cluster_ok
    began = time.time()
    old = primary(f)
    with hung(f, f"node-{old}"):
        until("another primary", lambda: primary(f) not in ("", old), FENCE_WAIT)
        fenced(f, old)
        vms_once_on(f, [n for n in f.nodes if n != old])
        record = the_fence(f, old, began)
        # run by the new primary of that moment (the role may move once more: the fence
        # takes the node's ZooKeeper member, and the ensemble may elect a new leader)
        assert record["node"] in f.coordinators and record["node"] != old, record
    f.bring_back(old)


def test_two_nodes_dying_at_once_are_fenced_one_after_the_other(cluster_ok: Faults) -> None:
    """A secondary coordinator and a hypervisor: their fences take the coordinator's
    ZooKeeper member with it, and the two left keep the quorum (two coordinators dying at
    once would stop the cluster, as README's Production layout says)."""
    f = cluster_ok
    began = time.time()
    coordinators = f.layout.zk_members(f.nodes)
    secondary = next(n for n in f.nodes[:len(coordinators)] if n != primary(f))
    dead = [secondary, f.nodes[-1]]
    assert f.nodes[-1] not in f.nodes[:len(coordinators)]     # a plain hypervisor
    survivors = [n for n in f.nodes if n not in dead]
    with hung(f, f"node-{dead[0]}"), hung(f, f"node-{dead[1]}"):
        for name in dead:
            fenced(f, name)
        vms_once_on(f, survivors)
    records = [r for name in dead for r in fence_records(f, name) if r["created"] >= began]
    assert [r["state"] for r in records] == ["succeeded", "succeeded"]

    def span(record: dict[str, Any]) -> tuple[float, float]:
        """From its power-off to the BMC's confirmation."""
        at = {key: h[0] for h in record["history"] for key in ("powering", "confirmed")
              if key in h[2]}
        return at["powering"], at["confirmed"]
    # one at a time (the fence lock): one power-off was confirmed before the other began
    first, second = sorted(span(r) for r in records)
    assert first[1] <= second[0], (first, second)
    f.bring_back(*dead)


def test_in_maintenance_a_silent_node_is_not_fenced_and_comes_back(
        cluster_ok: Faults) -> None:
    """An operator works on a node in maintenance: its daemon goes silent far longer than a
    fence waits, and nothing is fenced or moved; it comes back as it was."""
    f = cluster_ok
    dead = a_secondary(f)
    home = sorted(vm for vm, nodes in f.where().items() if nodes == [dead])
    began = time.time()

    def fences() -> list[dict[str, Any]]:
        return [r for r in fence_records(f, dead) if r["created"] >= began]
    f.pvc("cluster", "maintenance", "on", "--reason", "fault test")
    try:
        with hung(f, f"node-{dead}"):
            until(f"{dead} seen dead", lambda: node(f, dead)["daemon_state"] == "dead",
                  FENCE_WAIT)
            # the primary kept doing its duties well past the moment a fence was due
            last = times_as_epoch(node(f, dead))["keepalive"]
            due = last + (6 + 2 + 2) * 2.0     # the sandbox: 6 missed 2 s keepalives, 2 checks
            until("the primary's duties past the fence's due time", lambda: times_as_epoch(
                node(f, primary(f)))["keepalive"] > due, FENCE_WAIT)
            assert fences() == [] and power(f, dead) == "on"
            assert all(f.where().get(vm) == [dead] for vm in home)   # left where they run
        until(f"{dead} back", lambda: node(f, dead)["daemon_state"] == "run", FENCE_WAIT)
    finally:
        f.pvc("cluster", "maintenance", "off", "--yes")
    assert fences() == [] and power(f, dead) == "on"
    assert sorted(vm for vm, nodes in f.where().items() if nodes == [dead]) == home
    f.settled()


@pytest.mark.parametrize("which", ["a secondary", "the primary"])
def test_powering_a_node_off_through_pvc_is_a_fence(cluster_ok: Faults, which: str) -> None:
    """`pvc node power NODE off`: run by another node, confirmed by the BMC, the node fenced
    and its VMs running exactly once elsewhere; nothing shows them on two nodes, and they can
    be migrated at once."""
    f = cluster_ok
    began = time.time()
    victim = primary(f) if which == "the primary" else a_secondary(f)
    alive = [n for n in f.nodes if n != victim]
    home = sorted(vm for vm, nodes in f.where().items() if nodes == [victim])
    assert home
    res = f.pvc("node", "power", victim, "off", "--yes", "--reason", "test")
    assert f"{victim}: power off (as its BMC reports it)" in res.stdout, res.stdout
    [record] = [r for r in fence_records(f, victim) if r["created"] >= began]
    assert record["state"] == "succeeded" and record["node"] != victim, record
    assert node(f, victim)["daemon_state"] == "fenced"
    vms_once_on(f, alive)
    until("no VM shown on two nodes", lambda: not [
        r for r in status(f)["reasons"] if "several nodes" in r])
    moved = home[0]
    f.pvc("vm", "migrate", moved, "--wait", "--wait-timeout", "120")
    assert len(running_where(f, alive)[moved]) == 1
    f.bring_back(victim)
