"""Node faults: a hung daemon during an unflush, VMs destroyed behind pvc's back (once, and in a
loop), a domain pvc does not know, and a guest that floods its console."""
from __future__ import annotations

import json
import socket

import pytest

from tests.faults.conftest import Faults, until

pytestmark = pytest.mark.faults


def status(f: Faults) -> dict:
    return f.pvc.cluster_status()


def test_unflush_never_takes_vms_out_of_a_dead_node(cluster_ok: Faults) -> None:
    f = cluster_ok
    f.pvc("node", "flush", "hv1", "--wait", "--wait-timeout", "120")
    on_hv2 = sorted(vm for vm, nodes in f.where().items() if nodes == ["hv2"])
    coming_home = [v["name"] for v in f.pvc.json("vm", "list") if v["last_node"] == "hv1"]
    waiting = sorted(set(on_hv2) & set(coming_home))
    assert waiting
    with f.paused("node-hv2"):                    # hung: its session expires, it is dead
        until("hv2 seen dead", lambda: f.pvc.json("node", "info", "hv2")["daemon_state"]
              == "dead")
        assert any("node hv2: daemon dead" == r for r in status(f)["reasons"])
        record = f.finished(f.submit("node", "unflush", "hv1"))
        assert record["state"] == "succeeded", record
        assert f"{len(waiting)} wait for their node to run again" in record["message"]
        assert sorted(n for n, o in record["progress"]["outcomes"].items()
                      if o == "waiting") == waiting
        where = f.where()
        assert all(where[vm] == ["hv2"] for vm in waiting)      # still there, once
    until("hv2 back", lambda: f.pvc.json("node", "info", "hv2")["daemon_state"] == "run")
    f.pvc("node", "unflush", "hv1", "--wait", "--wait-timeout", "120")
    assert all(f.where()[vm] == ["hv1"] for vm in coming_home)


def test_a_vm_destroyed_behind_pvcs_back_is_started_again(cluster_ok: Faults) -> None:
    f = cluster_ok
    vm, node = next((vm, nodes[0]) for vm, nodes in sorted(f.where().items()))
    uuid = f.pvc.json("vm", "info", vm)["uuid"]
    f.hv(node).destroy(uuid)
    until(f"{vm} running again", lambda: f.where().get(vm) == [node])


def test_a_crash_loop_is_left_stopped_and_reported(cluster_ok: Faults) -> None:
    f = cluster_ok
    vm, node = next((vm, nodes[0]) for vm, nodes in sorted(f.where().items(), reverse=True))
    uuid = f.pvc.json("vm", "info", vm)["uuid"]
    for attempt in range(4):   # the default bound: 3 starts within 300 s
        until(f"{vm} started again", lambda: f.where().get(vm) == [node])
        f.hv(node).destroy(uuid)
    until("the crash loop reported", lambda: any(
        vm in r and "crash loop" in r for r in status(f)["reasons"]))
    assert vm not in f.where()
    assert "crash loop" in f.pvc.json("vm", "info", vm)["failure"]
    f.pvc("vm", "start", vm, "--wait", "--wait-timeout", "60")     # an operator starts it
    until("the drift cleared", lambda: not any(vm in r for r in status(f)["reasons"]))


def test_a_domain_pvc_does_not_know_is_listed_not_touched(cluster_ok: Faults) -> None:
    f = cluster_ok
    xml = ("<domain type='test'><name>handmade</name><memory unit='MiB'>16</memory>"
           "<os><type>hvm</type></os></domain>")
    f.hv("hv3").start(xml, "")
    try:
        until("hv3 to publish it", lambda: "handmade" in
              f.pvc.json("node", "info", "hv3")["unknown_domains"])
        listed = {v["name"]: v for v in f.pvc.json("vm", "list", "--all")}
        assert listed["handmade"]["node"] == "hv3" and listed["handmade"]["known"] is False
        assert "handmade" not in {v["name"] for v in f.pvc.json("vm", "list")}
        assert "node hv3 runs domains pvc does not know: handmade" in status(f)["reasons"]
        record = f.finished(f.submit("node", "flush", "hv3"))
        assert "domains pvc does not know still run there (handmade)" in record["message"]
        assert f.where()["handmade"] == ["hv3"]
        f.pvc("node", "unflush", "hv3", "--wait", "--wait-timeout", "120")
    finally:
        dom = f.hv("hv3").conn.lookupByName("handmade")
        f.hv("hv3").destroy(dom.UUIDString())
    until("hv3 clean again", lambda: not f.pvc.json("node", "info", "hv3")["unknown_domains"])


def test_a_chatty_guest_cannot_flood_zookeeper(cluster_ok: Faults) -> None:
    """10 MB of console in a moment: ZooKeeper stays up, the buffer stays within its byte
    limit and says what it dropped."""
    f = cluster_ok
    vm, node = next((vm, nodes[0]) for vm, nodes in sorted(f.where().items()))
    log = f.layout.console_dir(node) / f"{vm}.log"
    line = "x" * 1000 + "\n"
    with open(log, "a") as out:
        for _ in range(10):
            out.write(line * 1000)
            out.flush()
        out.write("END OF FLOOD\n")
    with f.client() as c:
        path = c.schema.vm_console(f.pvc.json("vm", "info", vm)["uuid"])

        def published() -> dict | None:
            buf = c.store.get_json(path, None)
            return buf if buf and buf["lines"] and buf["lines"][-1] == "END OF FLOOD" else None

        buf = until("the flood published", published)
        assert len(json.dumps(buf, separators=(",", ":"))) <= c.config.cluster.console_log_bytes
        assert buf["size_limited"] or any("lines dropped" in x for x in buf["lines"])
    for member in f.layout.zk_members(f.nodes):      # every member of the ensemble lives
        with socket.create_connection((member, f.layout.zk_port), timeout=5) as s:
            s.sendall(b"ruok")
            assert s.recv(4) == b"imok"


def test_in_maintenance_a_destroyed_vm_stays_down_until_maintenance_ends(
        cluster_ok: Faults) -> None:
    f = cluster_ok
    vm, node = next((vm, nodes[0]) for vm, nodes in sorted(f.where().items()))
    uuid = f.pvc.json("vm", "info", vm)["uuid"]
    f.pvc("cluster", "maintenance", "on", "--reason", "fault test")
    try:
        f.hv(node).destroy(uuid)
        until(f"{node} saying why {vm} stays down", lambda: "maintenance" in f.pvc.json(
            "node", "info", node)["drift"].get(vm, ""))
        assert vm not in f.where()                     # not started again on its own
    finally:
        f.pvc("cluster", "maintenance", "off", "--yes")
    until(f"{vm} running again", lambda: f.where().get(vm) == [node])
    f.settled()
