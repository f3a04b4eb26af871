"""ZooKeeper faults: a pause longer than the session (every session expires), pauses shorter
than it during a flush, a flush lock holder killed while another flush waits, and one member
of the ensemble silent (a follower, the leader)."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from pvc.sandbox import roles
from tests.faults.conftest import Faults, until

pytestmark = pytest.mark.faults
SESSION = 4.0   # the sandbox's session timeout


def test_session_expiry_everything_registers_again_and_works(cluster_ok: Faults) -> None:
    f = cluster_ok
    before = {n["name"]: n["workers"] for n in f.pvc.json("node", "list")}
    with f.zookeeper_paused():
        time.sleep(SESSION + 3)   # the fault: ZooKeeper silent longer than every session
    # every session expired: daemons, workers (each pool process) and tailers register again
    until("workers registered again", lambda: {
        n["name"]: n["workers"] for n in f.pvc.json("node", "list")} == before)
    assert all(n["daemon_state"] == "run" for n in f.pvc.json("node", "list"))
    vm = f.vm_names()[0]
    f.pvc("vm", "restart", vm, "--wait", "--wait-timeout", "60")
    assert len(f.where()[vm]) == 1


def test_a_flush_through_zookeeper_pauses_shorter_than_the_session(cluster_ok: Faults) -> None:
    """ZooKeeper stops for 2.5 s every 3 s while a flush runs: it finishes, and no VM stays
    marked busy (the claims of the flush are released however slow ZooKeeper was)."""
    f = cluster_ok
    op = f.submit("node", "flush", "hv1", "--max-parallel", "1")
    stop = threading.Event()

    def chaos() -> None:
        while not stop.is_set():
            with f.zookeeper_paused():
                stop.wait(2.5)
            stop.wait(0.5)

    t = threading.Thread(target=chaos, daemon=True)
    t.start()
    try:
        until("the flush to end", lambda: f.record(op)["state"] not in
              ("queued", "waiting-for-lock", "running"), 120)
    finally:
        stop.set()
        t.join()
    record = f.record(op)
    assert record["state"] == "succeeded", record["error"]
    assert record["progress"]["done"] == record["progress"]["total"]
    assert "hv1" not in {n for nodes in f.where().values() for n in nodes}
    f.pvc("node", "unflush", "hv1", "--wait", "--wait-timeout", "120")


def test_lock_holder_killed_while_another_flush_waits(cluster_ok: Faults) -> None:
    """Flush A (hv1) holds the lock and has claimed VMs it moved to hv2; flush B (hv2) waits
    for the lock. A's worker dies: its claims go with its session, B takes the lock and
    moves those VMs; A comes back (redelivered) and finishes after B. No circular wait."""
    f = cluster_ok
    libvirtd_hv1 = f.pid("libvirtd-hv1")
    with f.client() as c:
        # A stops right after its first move
        frozen = f.freeze_on_change(c, "hv2", "libvirtd-hv1")
        try:
            a = f.submit("node", "flush", "hv1", "--max-parallel", "1")
            assert frozen.wait(60)
            record = f.record(a)
            assert record["state"] == "running"
            claimed_on_hv2 = [u for u in c.node("hv2").domains
                              if c.store.get_text(c.schema.vm_operation(u)) == a]
            assert claimed_on_hv2                      # B will need what A holds
            b = f.submit("node", "flush", "hv2")       # queued behind A for the lock
            f.killed("worker-hv1")
        finally:
            os.kill(libvirtd_hv1, signal.SIGCONT)
    first, second = f.finished(b), f.finished(a)
    assert first["state"] == "succeeded", first
    assert second["state"] == "succeeded", second
    assert second["attempts"] == 2
    assert second["progress"]["done"] == second["progress"]["total"]
    assert {n for nodes in f.where().values() for n in nodes} == set(f.nodes) - {"hv1", "hv2"}
    for node in ("hv2", "hv1"):
        f.pvc("node", "unflush", node, "--wait", "--wait-timeout", "120")


def test_status_is_degraded_while_a_node_has_no_worker(cluster_ok: Faults) -> None:
    f = cluster_ok
    f.pvc("sandbox", "process", "stop", "worker-hv3", "--port-offset", f.pvc.offset)
    try:
        until("hv3 without workers", lambda: f.pvc.cluster_status()["reasons"] == [
            "node hv3: no running worker, it cannot run operations"])
        res = f.pvc("cluster", "status", ok=False)
        assert "DEGRADED" in res.stdout and "no running worker" in res.stdout
    finally:
        f.pvc("sandbox", "process", "start", "worker-hv3", "--port-offset", f.pvc.offset)


def test_a_follower_of_the_ensemble_silent_changes_nothing(cluster_ok: Faults) -> None:
    """One ZooKeeper follower stops (SIGSTOP): its clients move to the other members, the
    quorum serves every command at once (none is refused), operations run; continued, it
    rejoins as a follower."""
    f = cluster_ok
    leader = roles.zookeeper_leader(f.layout)
    follower = next(n for n in reversed(f.coordinators) if n != leader)
    with f.paused(f"zookeeper-{follower}"):
        vm = f.vm_names()[0]
        f.pvc("vm", "restart", vm, "--wait", "--wait-timeout", "60")
        assert len(f.where()[vm]) == 1
        assert f.pvc.json("cluster", "status")["nodes"]["total"] == len(f.nodes)
    until(f"{follower}'s member following again", lambda: member_mode(f, follower) == "follower")
    assert roles.zookeeper_leader(f.layout) == leader


def test_the_ensemble_leader_silent_another_member_leads(cluster_ok: Faults) -> None:
    """The ZooKeeper leader stops (SIGSTOP): the other two elect a leader among them (the
    ensemble refuses sessions meanwhile, syncLimit ticks); then operations run and every VM
    runs once; continued, the old leader rejoins as a follower."""
    f = cluster_ok
    leader = roles.zookeeper_leader(f.layout)
    with f.paused(f"zookeeper-{leader}"):
        until("another member leads",
              lambda: roles.zookeeper_leader(f.layout) not in ("", leader))
        vm = until("the ensemble to take sessions", f.vm_names)[0]
        f.pvc("vm", "restart", vm, "--wait", "--wait-timeout", "60")
        assert len(f.where()[vm]) == 1
    # continued, it still believes it leads until it finds no quorum behind it
    until(f"{leader}'s member following", lambda: member_mode(f, leader) == "follower")
    modes = [member_mode(f, n) for n in f.coordinators]
    assert sorted(modes) == ["follower", "follower", "leader"], modes


def member_mode(f: Faults, node: str) -> str:
    from pvc.core import zookeeper
    return zookeeper.member_mode(roles.address(f.layout, node), f.layout.zk_port)
