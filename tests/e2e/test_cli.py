"""Every CLI command of the foundation against a running sandbox, with its error cases."""
from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import OFFSET, SANDBOX_ENV, LineReader, on_a_terminal, wait_until

pytestmark = pytest.mark.e2e

NODE_KEYS = {"name", "daemon_state", "domain_state", "coordinator_state", "vms", "mem_total",
             "mem_free", "mem_allocated", "vcpus_allocated", "load"}
VM_KEYS = {"name", "uuid", "state", "node", "last_node", "memory", "vcpus"}


def kvm_xml(name: str) -> str:
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <serial type='pty'><log file='/var/log/libvirt/{name}.log' append='off'/></serial>
  </devices>
</domain>
"""


def test_node_list_and_info(pvc) -> None:
    nodes = pvc.json("node", "list")
    assert [n["name"] for n in nodes] == ["hv1", "hv2", "hv3"]
    for n in nodes:
        assert NODE_KEYS <= set(n)
        assert (n["daemon_state"], n["domain_state"]) == ("run", "ready")
        assert n["mem_total"] > 0 and n["vms"] == 2
    assert sorted(n["coordinator_state"] for n in nodes) == ["primary", "secondary",
                                                             "secondary"]
    info = pvc.json("node", "info", "hv2")
    assert info["name"] == "hv2" and NODE_KEYS <= set(info)
    assert "NAME" in pvc("node", "list").stdout
    assert pvc.error("node", "info", "hv9") == "error: no node named 'hv9'"


def test_cluster_status(pvc) -> None:
    st = pvc.json("cluster", "status")
    assert st["healthy"] and st["nodes"]["total"] == 3 and st["primary"].startswith("hv")
    assert st["vms"]["total"] >= 6
    assert "healthy" in pvc("cluster", "status").stdout


def test_vm_define_list_info_undefine(pvc, tmp_path: Path) -> None:
    xml = tmp_path / "web1.xml"
    xml.write_text(kvm_xml("web1"))
    out = pvc("vm", "define", str(xml), "--selector", "vms", "--node-limit", "hv1,hv2",
              "--migration-method", "shutdown").stdout.split()
    assert out[0] == "web1" and len(out[1]) == 36
    uuid = out[1]
    listed = {v["name"]: v for v in pvc.json("vm", "list")}
    assert VM_KEYS <= set(listed["web1"])
    assert listed["web1"]["state"] == "stop" and listed["web1"]["memory"] == 32
    assert listed["web1"]["vcpus"] == 2 and listed["web1"]["node"] == ""
    by_uuid = pvc.json("vm", "info", uuid)
    assert by_uuid["name"] == "web1" and by_uuid["node_limit"] == ["hv1", "hv2"]
    assert by_uuid["node_selector"] == "vms" and by_uuid["migration_method"] == "shutdown"
    assert "<uuid>" in pvc.json("vm", "info", "web1", "--xml")["xml"]
    assert [v["name"] for v in pvc.json("vm", "list", "--state", "stop")] == ["web1"]
    assert pvc("vm", "undefine", "web1").stdout.startswith("undefined web1")
    assert "web1" not in {v["name"] for v in pvc.json("vm", "list")}


def test_define_errors_change_nothing(pvc, tmp_path: Path) -> None:
    before = pvc.json("vm", "list")
    bad = tmp_path / "bad.xml"
    bad.write_text("<domain type='kvm'><name>x</name>")
    assert pvc.error("vm", "define", str(bad)).startswith("error: malformed domain XML")
    good = tmp_path / "demo1.xml"
    good.write_text(kvm_xml("demo1"))
    assert pvc.error("vm", "define", str(good)) == "error: a VM named 'demo1' already exists"
    other = tmp_path / "x.xml"
    other.write_text(kvm_xml("x1"))
    assert pvc.error("vm", "define", str(other), "--node", "hv9") == \
        "error: unknown node(s): hv9"
    assert "No such file" in pvc.error("vm", "define", str(tmp_path / "missing.xml"))
    assert pvc.json("vm", "list") == before


def test_vm_list_filters(pvc) -> None:
    on_hv1 = pvc.json("vm", "list", "--node", "hv1")
    assert on_hv1 and all(v["node"] == "hv1" for v in on_hv1)
    running = pvc.json("vm", "list", "--state", "running")
    assert {v["name"] for v in running} >= {"demo2", "demo3"}
    assert "no node named 'hv9'" in pvc.error("vm", "list", "--node", "hv9")


def test_lifecycle_with_wait(pvc) -> None:
    assert pvc("vm", "stop", "demo2", "--wait").stdout.strip() == "demo2 stopped"
    info = pvc.json("vm", "info", "demo2")
    assert info["state"] == "stop" and info["observed"] == "stopped"
    assert pvc("vm", "start", "demo2", "--wait").stdout.strip().startswith("demo2 started on")
    assert pvc.json("vm", "info", "demo2")["observed"] == "running"
    assert pvc("vm", "shutdown", "demo2", "--wait").stdout.strip() == "demo2 shut down"
    assert "nothing" not in pvc("vm", "start", "demo2", "--wait").stdout
    record = pvc.json("vm", "restart", "demo2", "--wait")
    assert record["state"] == "succeeded" and record["kind"] == "vm.restart"
    assert pvc.json("vm", "info", "demo2")["observed"] == "running"


def test_submit_without_wait_and_task_show(pvc) -> None:
    out = pvc("vm", "stop", "demo3").stdout
    op_id = out.split("operation ")[1].split()[0]
    shown = pvc.json("task", "show", op_id)
    assert shown["kind"] == "vm.stop" and shown["target"] == "demo3"
    assert shown["requested_by"] and shown["history"][0][1] == "queued"
    text = pvc("task", "show", op_id).stdout
    assert f"operation {op_id}: vm.stop demo3" in text
    ids = [t["id"] for t in pvc.json("task", "list")]
    assert op_id in ids
    assert "ID" in pvc("task", "list").stdout
    assert pvc.error("task", "show", "nope") == "error: no operation 'nope'"


def test_conflicting_and_unknown(pvc) -> None:
    assert pvc.error("vm", "start", "ghost") == "error: no VM named 'ghost'"
    assert pvc.error("vm", "restart", "ghost", "--wait") == "error: no VM named 'ghost'"
    assert "is running on" in pvc.error("vm", "undefine", "demo4")
    pvc("vm", "stop", "demo5", "--wait")
    assert "cannot restart VM demo5" in pvc.error("vm", "restart", "demo5")


def test_a_server_that_is_down_is_one_clear_line(pvc, tmp_path: Path) -> None:
    cfg = tmp_path / "down.yaml"
    cfg.write_text("cluster:\n  zookeeper:\n    hosts: 127.0.0.1:1\n    timeout: 1\n")
    line = pvc.error("--config", str(cfg), "vm", "list")
    assert re.fullmatch(r"error: cannot reach ZooKeeper at 127\.0\.0\.1:1 \(no answer in "
                        r"1\.\ds\)", line), line


def test_config_validate(pvc, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("node:\n  name: hv1\n")
    assert "valid (node hv1 configuration)" in pvc("config", "validate", str(good)).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("node:\n  name: 5\n  colour: red\n")
    res = pvc("config", "validate", str(bad), ok=False)
    assert res.returncode == 1
    assert "node.name: expected a string, got 5" in res.stderr
    assert "node.colour: unknown key" in res.stderr
    assert pvc.json("config", "validate", str(good))["valid"] is True


def test_sandbox_up_again_changes_nothing(pvc) -> None:
    before = pvc.json("sandbox", "status", "--port-offset", OFFSET)
    res = pvc("sandbox", "up", "--hypervisor", "test", "--port-offset", OFFSET)
    assert "already running" in res.stdout and "nothing changed" in res.stdout
    after = pvc.json("sandbox", "status", "--port-offset", OFFSET)
    assert before["processes"] == after["processes"] and after["healthy"]


def test_flower_lists_one_worker_per_node_and_requires_auth(pvc) -> None:
    st = pvc.json("sandbox", "status", "--port-offset", OFFSET)
    url = st["flower"]["url"] + "/api/workers?refresh=1"
    password = Path(st["flower"]["password_file"]).read_text().strip()
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(url, timeout=10)
    assert denied.value.code == 401
    token = base64.b64encode(f"pvc:{password}".encode()).decode()
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    workers = json.load(urllib.request.urlopen(req, timeout=30))
    assert sorted(w.split("@")[0] for w in workers) == ["hv1", "hv2", "hv3"]
    queues = {w.split("@")[0]: sorted(q["name"] for q in info["active_queues"])
              for w, info in workers.items()}
    assert queues == {f"hv{i}": ["pvc.default", f"pvc.node.hv{i}"] for i in (1, 2, 3)}


def test_help_lists_every_command(pvc) -> None:
    out = pvc("--help").stdout
    for cmd in ("cluster", "node", "vm", "task", "sandbox", "config"):
        assert cmd in out


def test_secrets_are_not_world_readable(pvc) -> None:
    base = Path(SANDBOX_ENV["PVC_SANDBOX_DIR"])
    for f in [base / "client.yaml", *base.glob("secrets/*"), *base.glob("nodes/*/pvc.yaml"),
              *base.glob("redis/*/redis.conf"), *base.glob("sentinel/*/sentinel.conf"),
              *base.glob("zookeeper/*/jaas.conf"), base / "flower" / "flowerconfig.py"]:
        assert f.stat().st_mode & 0o077 == 0, f


def console_file(vm: str, pvc) -> Path:
    node = pvc.json("vm", "info", vm)["running_on"][0]
    return Path(SANDBOX_ENV["PVC_SANDBOX_DIR"]) / "nodes" / node / "console" / f"{vm}.log"


def test_vm_log_prints_the_console_plain_when_piped(pvc) -> None:
    path = console_file("demo6", pvc)
    with open(path, "ab") as f:
        f.write(b"".join(b"line %d\n" % i for i in range(30)))
    wait_until("the console to be published",
               lambda: "line 29" in pvc("vm", "log", "demo6").stdout)
    out = pvc("vm", "log", "demo6").stdout.splitlines()
    assert out == [f"line {i}" for i in range(30)]
    assert pvc("vm", "log", "demo6", "--lines", "3").stdout.splitlines() == \
        ["line 27", "line 28", "line 29"]


def test_vm_log_pages_on_a_terminal(pvc, tmp_path: Path) -> None:
    pager = tmp_path / "pager"
    pager.write_text("#!/bin/sh\nsed 's/^/PAGED: /'\n")
    pager.chmod(0o755)
    wait_until("demo6's console", lambda: "line 29" in pvc("vm", "log", "demo6").stdout)
    code, output = on_a_terminal(["vm", "log", "demo6", "-n", "2"], env={"PAGER": str(pager)})
    assert code == 0
    assert "PAGED: line 28" in output and "PAGED: line 29" in output


def test_vm_log_follow_streams_new_lines_once(pvc) -> None:
    path = console_file("demo4", pvc)
    with open(path, "a") as f:
        f.write("marker\n")
    wait_until("the marker", lambda: "marker" in pvc("vm", "log", "demo4").stdout)
    with LineReader(["vm", "log", "demo4", "--follow", "--lines", "1"]) as follower:
        assert follower.line() == "marker"        # history printed: the follower is live
        lines = ["same"] * 5 + [f"other {i}" for i in range(5)]
        for line in lines:
            with open(path, "a") as f:
                f.write(line + "\n")
        assert [follower.line() for _ in lines] == lines


def test_vm_log_errors(pvc, tmp_path: Path) -> None:
    assert pvc.error("vm", "log", "ghost") == "error: no VM named 'ghost'"
    xml = tmp_path / "quiet.xml"
    xml.write_text("<domain type='kvm'><name>quiet</name><memory unit='MiB'>8</memory>"
                   "<os><type>hvm</type></os></domain>")
    pvc("vm", "define", str(xml))
    assert "has no serial console log" in pvc.error("vm", "log", "quiet")
    stopped = tmp_path / "stopped.xml"
    stopped.write_text(kvm_xml("stopped1"))
    pvc("vm", "define", str(stopped))
    assert pvc.error("vm", "log", "stopped1") == \
        "error: VM stopped1 is not running and has no console output"
    assert "is not running" in pvc.error("vm", "log", "stopped1", "--follow")


def test_a_node_without_a_worker_refuses_at_once(pvc) -> None:
    """Nobody would read the queue: the request fails now instead of waiting forever."""
    vm = next(v["name"] for v in pvc.json("vm", "list") if v["running_on"] == ["hv3"])
    pvc("sandbox", "process", "stop", "worker-hv3", "--port-offset", OFFSET)
    wait_until("hv3's workers to be seen gone",
               lambda: pvc.json("node", "info", "hv3")["workers"] == 0)
    before = pvc.json("vm", "info", vm)
    assert pvc.error("vm", "stop", vm) == \
        f"error: node hv3 has no running worker (pvc-worker): it cannot act on {vm}"
    assert pvc.error("node", "flush", "hv3").startswith("error: node hv3 has no running worker")
    assert pvc.json("vm", "info", vm) == before
    pvc("sandbox", "process", "start", "worker-hv3", "--port-offset", OFFSET)
    wait_until("a new worker on hv3", lambda: pvc.json("node", "info", "hv3")["workers"] > 0)
    pvc("vm", "stop", vm, "--wait")
    pvc("vm", "start", vm, "--wait")


def test_the_sandbox_zookeeper_keeps_strangers_out(pvc) -> None:
    from tests.faults.conftest import attack
    status = pvc.status()
    got = attack(status["network"]["client_namespace"], "zookeeper", status["zookeeper"])
    assert "allowed" not in got.values(), got
    assert pvc.json("cluster", "status")["vms"]["total"] > 0     # pvc itself is let in


def test_the_sandbox_zookeeper_answers_only_the_health_words(pvc) -> None:
    import socket
    host, port = pvc.status()["zookeeper"].split(",")[0].rsplit(":", 1)   # a member

    def ask(word: str) -> bytes:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(word.encode())
            return s.recv(200)

    assert ask("ruok") == b"imok"
    assert ask("mntr").startswith(b"zk_version")
    for word in ("envi", "conf", "dump", "wchc", "stat"):
        assert b"not in the whitelist" in ask(word), word


def test_the_sandbox_bmcs_refuse_what_real_bmcs_must_refuse(pvc) -> None:
    """ipmitool as an attacker on the cluster network would use it: cipher suite 0 with a
    wrong password, IPMI 1.5, a wrong password, no user; the BMC's password opens it."""
    from pvc.network import ip
    from pvc.sandbox import bmc
    status = pvc.status()
    host = status["network"]["host_address"]        # the BMCs listen on the host's side
    port = str(bmc.port(int(pvc.offset), 1))
    password = open(f"{pvc.env['PVC_SANDBOX_DIR']}/secrets/bmc-hv1.password").read().strip()

    def ipmitool(*args: str) -> int:
        cmd = ["ipmitool", *args, "-H", host, "-p", port, "-N", "1", "-R", "2", "power",
               "status"]
        return subprocess.run(ip.in_netns(status["network"]["client_namespace"], cmd),
                              capture_output=True, timeout=60).returncode

    assert ipmitool("-I", "lanplus", "-C", "0", "-U", bmc.USER, "-P", "wrong") != 0
    assert ipmitool("-I", "lan", "-U", bmc.USER, "-P", password) != 0           # IPMI 1.5
    assert ipmitool("-I", "lanplus", "-C", "3", "-U", bmc.USER, "-P", "wrong") != 0
    assert ipmitool("-I", "lanplus", "-C", "3", "-U", "", "-P", "") != 0         # anonymous
    assert ipmitool("-I", "lanplus", "-C", "3", "-U", bmc.USER, "-P", password) == 0
    def audits() -> list[dict] | None:
        found = [pvc.json("node", "info", n)["bmc"] for n in ("hv1", "hv2", "hv3")]
        return found if all(a.get("checked") for a in found) else None

    assert [a["problems"] for a in wait_until("every node's BMC audit", audits)] == [[], [], []]
