"""Flush, unflush and migration on a `test`-hypervisor sandbox (shutdown migrations)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.conftest import Pvc, sandbox, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pvc() -> Iterator[Pvc]:
    with sandbox("test-flush", "1200", "test", 3, 9) as p:
        yield p


def op_id(out: str) -> str:
    return out.split("operation ")[1].split()[0]


def running_once(pvc: Pvc) -> dict[str, str]:
    """Every VM that should run runs on exactly one node: {vm: node}."""
    where: dict[str, list[str]] = {}
    for n in pvc.json("node", "list"):
        info = pvc.json("node", "info", n["name"])
        assert info["vms"] >= 0
    for v in pvc.vms().values():
        where[v["name"]] = v["running_on"]
    assert all(len(nodes) <= 1 for nodes in where.values()), where
    return {name: nodes[0] for name, nodes in where.items() if nodes}


def test_dry_run_prints_the_plan_and_changes_nothing(pvc) -> None:
    before = pvc.vms()
    plan = pvc.json("node", "flush", "hv1", "--dry-run")
    assert sorted(p["vm"] for p in plan) == sorted(n for n, v in before.items()
                                                   if v["running_on"] == ["hv1"])
    assert all(p["target"] in ("hv2", "hv3") and p["method"] == "shutdown" for p in plan)
    assert "→" in pvc("node", "flush", "hv1", "--dry-run").stdout
    assert pvc.vms() == before
    assert pvc.json("node", "info", "hv1")["domain_state"] == "ready"


def test_flush_and_unflush_return_every_vm_home(pvc) -> None:
    home = running_once(pvc)
    on_hv1 = sorted(n for n, node in home.items() if node == "hv1")
    out = pvc("node", "flush", "hv1", "--wait")
    assert out.stdout.strip() == f"flushed hv1: {len(on_hv1)} moved, 0 shut down to start on unflush"
    assert "[0/3]" in out.stderr and "succeeded [3/3]" in out.stderr
    node = pvc.json("node", "info", "hv1")
    assert (node["domain_state"], node["vms"]) == ("flushed", 0)
    vms = pvc.vms()
    for name in on_hv1:
        assert vms[name]["last_node"] == "hv1" and vms[name]["running_on"] != ["hv1"]
    flush = pvc.json("task", "list")[0]
    shown = pvc.json("task", "show", flush["id"])
    assert shown["progress"]["done"] == len(on_hv1)
    assert set(shown["progress"]["items"]) == set(on_hv1)
    assert all("hv1 →" in s for s in shown["progress"]["items"].values())

    out = pvc("node", "unflush", "hv1", "--wait")
    assert out.stdout.strip() == f"unflushed hv1: {len(on_hv1)} returned, 0 started"
    assert running_once(pvc) == home
    assert all(v["last_node"] == "" for v in pvc.vms().values())
    assert pvc.json("node", "info", "hv1")["domain_state"] == "ready"


def test_shutdown_migration_migrate_unmigrate_move(pvc) -> None:
    vm = next(n for n, node in running_once(pvc).items() if node == "hv2")
    out = pvc("vm", "migrate", vm, "--target", "hv3", "--wait").stdout
    assert f"{vm}: hv2 → hv3 (shutdown" in out
    info = pvc.json("vm", "info", vm)
    assert (info["running_on"], info["node"], info["last_node"]) == (["hv3"], "hv3", "hv2")
    pvc("vm", "migrate", vm, "--target", "hv1", "--wait")      # keeps the first last node
    assert pvc.json("vm", "info", vm)["last_node"] == "hv2"
    pvc("vm", "migrate", vm, "--target", "hv3", "--force", "--wait")   # --force replaces it
    assert pvc.json("vm", "info", vm)["last_node"] == "hv1"
    pvc("vm", "migrate", vm, "--target", "hv2", "--wait")
    pvc("vm", "migrate", vm, "--target", "hv3", "--force", "--wait")
    assert pvc.json("vm", "info", vm)["last_node"] == "hv2"
    pvc("vm", "unmigrate", vm, "--wait")
    info = pvc.json("vm", "info", vm)
    assert (info["running_on"], info["last_node"]) == (["hv2"], "")
    pvc("vm", "move", vm, "--target", "hv1", "--wait")
    info = pvc.json("vm", "info", vm)
    assert (info["running_on"], info["node"], info["last_node"]) == (["hv1"], "hv1", "")
    pvc("vm", "move", vm, "--target", "hv2", "--wait")


def test_migration_errors_change_nothing(pvc) -> None:
    before = pvc.vms()
    vm = next(n for n, v in before.items() if v["running_on"] == ["hv2"])
    assert pvc.error("vm", "migrate", vm, "--target", "hv2") == \
        f"error: VM {vm} is already on hv2"
    assert pvc.error("vm", "migrate", "ghost") == "error: no VM named 'ghost'"
    assert pvc.error("vm", "migrate", vm, "--target", "hv9") == "error: no node named 'hv9'"
    assert pvc.error("vm", "unmigrate", vm) == f"error: VM {vm} has no last node to return to"
    assert "--target" in pvc.error("vm", "move", vm)
    pvc("node", "flush", "hv3", "--wait")
    assert pvc.error("vm", "migrate", vm, "--target", "hv3") == \
        "error: node hv3 cannot take VMs now: it is flushed"
    pvc("node", "unflush", "hv3", "--wait")
    after = pvc.vms()
    assert {n: (v["node"], v["running_on"]) for n, v in after.items()} == \
        {n: (v["node"], v["running_on"]) for n, v in before.items()}


@contextmanager
def lock_held_elsewhere(pvc: Pvc) -> Iterator[subprocess.Popen]:
    """Another process (not a worker) holds the flush lock until it is killed."""
    cfg = Path(pvc.env["PVC_SANDBOX_DIR"]) / "client.yaml"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(cfg)],
                              stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_second_flush_of_the_same_node_is_refused(pvc) -> None:
    with lock_held_elsewhere(pvc):
        first = op_id(pvc("node", "flush", "hv2").stdout)   # queued behind the lock
        assert pvc.error("node", "flush", "hv2") == \
            f"error: node hv2 already has operation {first} in flight (see: pvc task show {first})"
        assert pvc.error("node", "unflush", "hv2").startswith(
            f"error: node hv2 already has operation {first}")
    pvc("task", "watch", first)
    pvc("node", "unflush", "hv2", "--wait")


def test_two_flushes_run_one_after_the_other(pvc) -> None:
    a = op_id(pvc("node", "flush", "hv2").stdout)
    b = op_id(pvc("node", "flush", "hv3").stdout)
    pvc("task", "watch", a)
    pvc("task", "watch", b)
    ra, rb = pvc.json("task", "show", a), pvc.json("task", "show", b)
    assert ra["state"] == rb["state"] == "succeeded"
    first, second = sorted([ra, rb], key=lambda r: r["lock_acquired"])
    assert first["lock_released"] <= second["lock_acquired"]
    assert any(h[1] == "waiting-for-lock" for h in second["history"])
    pvc("node", "unflush", "hv2", "--wait")
    pvc("node", "ready", "hv3", "--wait")          # the alias of unflush
    assert pvc.json("node", "info", "hv3")["domain_state"] == "ready"
    assert len(running_once(pvc)) == 9


def test_cancel_a_flush_waiting_for_the_lock(pvc) -> None:
    with lock_held_elsewhere(pvc):
        flush = op_id(pvc("node", "flush", "hv1").stdout)
        wait_until("the flush to wait for the lock", lambda: pvc.json(
            "task", "show", flush)["state"] == "waiting-for-lock")
        assert pvc("task", "cancel", flush).stdout.strip() == \
            f"operation {flush} cancelled (node.flush hv1)"
        res = pvc("task", "watch", flush, ok=False)
        assert res.returncode == 1 and "was cancelled" in res.stderr
        assert pvc.json("node", "lock")["queue"] == []        # it left the lock's queue
        assert pvc.json("node", "info", "hv1")["domain_state"] == "ready"
        assert pvc.error("task", "cancel", flush) == \
            f"error: operation {flush} already ended (cancelled)"
        again = op_id(pvc("node", "flush", "hv1").stdout)     # the node is free again
        assert pvc("task", "cancel", again).returncode == 0
    vm = pvc.json("vm", "list")[0]["name"]
    started = pvc.json("vm", "restart", vm, "--wait")
    assert pvc.error("task", "cancel", started["id"]) == \
        f"error: operation {started['id']} already ended (succeeded)"


def test_lock_holder_killed_next_flush_proceeds(pvc) -> None:
    with lock_held_elsewhere(pvc) as holder:
        lock = pvc.json("node", "lock")
        assert lock["holder"]["op"] == "held-by-test"
        res = pvc("node", "flush", "hv1")
        assert "queued: the flush lock is held by hv9's flush (op held-by-test)" in res.stderr
        flush = op_id(res.stdout)
        wait_until("the flush to wait for the lock", lambda: pvc.json(
            "task", "show", flush)["state"] == "waiting-for-lock")
        assert "held by hv9's flush (op held-by-test)" in pvc.json("task", "show", flush)["message"]
        os.kill(holder.pid, signal.SIGKILL)   # its session expires: the lock is freed
    pvc("task", "watch", flush)
    assert pvc.json("node", "info", "hv1")["domain_state"] == "flushed"
    pvc("node", "unflush", "hv1", "--wait")


HOLD_LOCK = """
import json, sys
from pvc.core import config
from pvc.core.cluster import Cluster
c = Cluster.connect(config.load(sys.argv[1]))
lock = c.store.lock(c.schema.flush_lock, json.dumps({"op": "held-by-test", "kind": "flush",
                                                     "node": "hv9"}))
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_three_flushes_at_once_do_not_deadlock(pvc) -> None:
    """Default worker settings; each node's flush holds a worker slot while two of them wait
    for the lock, and VMs migrate into the waiting nodes."""
    ids = [op_id(pvc("node", "flush", n).stdout) for n in ("hv1", "hv2", "hv3")]
    for i in ids:
        pvc("task", "watch", i, timeout=300)
    records = [pvc.json("task", "show", i) for i in ids]
    assert all(r["state"] == "succeeded" for r in records), records
    assert all(n["domain_state"] == "flushed" and n["vms"] == 0
               for n in pvc.json("node", "list"))
    ids = [op_id(pvc("node", "unflush", n).stdout) for n in ("hv1", "hv2", "hv3")]
    for i in ids:
        pvc("task", "watch", i, timeout=300)
    assert len(running_once(pvc)) == 9


def test_whole_cluster_flushed_one_after_another(pvc) -> None:
    home = running_once(pvc)
    for node in ("hv1", "hv2"):
        pvc("node", "flush", node, "--wait")
    out = pvc("node", "flush", "hv3", "--wait").stdout
    parked = ", ".join(sorted(home))
    assert out.strip() == f"flushed hv3: 0 moved, 9 shut down to start on unflush ({parked})"
    vms = pvc.vms()
    assert all(v["state"] == "stop" and v["autostart"] and v["running_on"] == []
               for v in vms.values())
    for node in ("hv1", "hv2", "hv3"):
        pvc("node", "unflush", node, "--wait")
    assert running_once(pvc) == home
    assert not any(v["autostart"] or v["last_node"] for v in pvc.vms().values())
