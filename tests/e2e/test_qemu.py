"""Real guests (QEMU under TCG) on a 2-node `qemu` sandbox: live migration, and a flush whose
worker is killed mid-way."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from pvc.sandbox import sandbox as sb
from tests.e2e.conftest import LineReader, Pvc, sandbox, sandbox_processes, wait_until

pytestmark = pytest.mark.e2e

# One migration at a time, so a flush of three guests takes long enough to kill its worker.
SERIAL = {"PVC_CLUSTER__MIGRATION__MAX_PARALLEL": "1"}


@pytest.fixture(scope="module")
def pvc() -> Iterator[Pvc]:
    with sandbox("test-qemu", "1100", "qemu", 2, 3, SERIAL, monitoring=True) as p:
        yield p


def console(pvc: Pvc, node: str, vm: str) -> Path:
    return Path(pvc.env["PVC_SANDBOX_DIR"]) / "nodes" / node / "console" / f"{vm}.log"


def ticks(path: Path) -> list[int]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [int(n) for n in re.findall(r" tick (\d+)", text)]


def where(pvc: Pvc) -> dict[str, list[str]]:
    return {name: v["running_on"] for name, v in pvc.vms().items()}


def test_vm_statistics_come_from_libvirt(pvc) -> None:
    """Each node publishes its guests' figures; `vm info`, `vm list --stats` and the
    metrics show them."""
    def stats() -> dict[str, Any]:
        found: dict[str, Any] = pvc.json("vm", "info", "demo3")["stats"]
        return found if "cpu%" in found else {}    # a rate needs two samples

    figures = wait_until("demo3's statistics with a CPU rate", stats, 120)
    info = pvc.json("vm", "info", "demo3")
    assert figures["node"] == info["running_on"][0]
    assert figures["cpu"] > 0 and figures["mem"] > 0 and figures["cpu%"] >= 0
    assert "rx" in figures and "tx" in figures          # its NIC on the demo network
    rows = {r["name"]: r for r in pvc.json("vm", "list", "--stats")}
    assert rows["demo3"]["stats"]["cpu"] >= figures["cpu"]
    text = pvc("vm", "info", "demo3").stdout
    assert re.search(r"stats\s+cpu [0-9.]+% \([0-9.]+ s\), memory", text), text
    table = pvc("vm", "list", "--stats").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "OBSERVED", "NODE", "CPU%"]
    # exported by the primary's endpoint, per VM and node
    st = pvc.status()["prometheus"]
    token = Path(st["metrics_token_file"]).read_text().strip()

    def exported() -> bool:
        request = urllib.request.Request(st["metrics"],
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            body = answer.read().decode()
        return f'pvc_vm_cpu_seconds_total{{node="{figures["node"]}",vm="demo3"}}' in body

    wait_until("demo3's CPU time in the metrics", exported, 30)


def test_live_migration_keeps_the_guest_running(pvc) -> None:
    src = console(pvc, "hv1", "demo1")
    wait_until("demo1 to boot and tick on hv1", lambda: ticks(src), 120)
    out = pvc("vm", "migrate", "demo1", "--target", "hv2", "--wait").stdout
    assert "demo1: hv1 → hv2 (live" in out and "downtime" in out
    last_on_source = max(ticks(src))
    dst = console(pvc, "hv2", "demo1")
    # the same guest goes on counting on the target: no reboot, no gap back to 0
    wait_until("demo1 to tick on hv2", lambda: any(t > last_on_source for t in ticks(dst)), 60)
    assert 0 not in ticks(dst)
    assert where(pvc)["demo1"] == ["hv2"]
    pvc("vm", "unmigrate", "demo1", "--wait")
    assert where(pvc)["demo1"] == ["hv1"]


def listening(pids: set[int], namespaces: list[str]) -> list[tuple[str, int]]:
    """(address:port, pid) of every TCP listener owned by one of pids, in this network
    namespace and in the sandbox's (its nodes run in their own)."""
    found = []
    for ns in [None, *namespaces]:
        cmd = ["ss", "-ltnpH"] if ns is None else ["ip", "netns", "exec", ns, "ss", "-ltnpH"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            for pid in map(int, re.findall(r"pid=(\d+)", line)):
                if pid in pids:
                    found.append((line.split()[3], pid))
    return found


def test_nothing_the_sandbox_started_listens_on_every_address(pvc) -> None:
    """Checked while a live migration runs (the receiving QEMU listens then)."""
    home = where(pvc)["demo3"][0]
    other = "hv2" if home != "hv2" else "hv1"
    op = json.loads(pvc("vm", "migrate", "demo3", "--target", other, "--bandwidth", "8",
                        "--format", "json").stdout)["id"]
    lo, hi = 49200 + int(pvc.offset), 49200 + int(pvc.offset) + 100
    net = sb.Layout(Path(pvc.env["PVC_SANDBOX_DIR"]), int(pvc.offset)).net
    namespaces = [net.ns(n) for n in ("hv1", "hv2")]

    def incoming() -> list[tuple[str, int]]:
        pids = set(sandbox_processes(pvc.env["PVC_SANDBOX_DIR"]))
        found = listening(pids, namespaces)
        return [(a, p) for a, p in found if lo <= int(a.rsplit(":", 1)[1]) < hi]

    found = wait_until("the receiving QEMU to listen", incoming, 60)
    assert pvc.json("task", "show", op)["state"] == "running"
    # the receiving QEMU listens on the target's cluster address only
    assert {a.rsplit(":", 1)[0] for a, _ in found} == {net.node_address(int(other[2:]))}
    everything = listening(set(sandbox_processes(pvc.env["PVC_SANDBOX_DIR"])), namespaces)
    wildcard = [(a, p) for a, p in everything if a.startswith(("0.0.0.0:", "*:", "[::]:"))]
    assert wildcard == [], wildcard
    pvc("task", "watch", op, timeout=300)
    assert where(pvc)["demo3"] == [other]


def test_follow_continues_across_a_live_migration(pvc) -> None:
    home = where(pvc)["demo1"][0]
    other = "hv2" if home == "hv1" else "hv1"
    wait_until("demo1's console", lambda: "tick" in pvc("vm", "log", "demo1").stdout, 120)
    with LineReader(["vm", "log", "demo1", "--follow", "--lines", "3"], pvc.env) as follower:
        seen: list[int] = []

        def next_tick() -> int:
            while True:
                m = re.search(r" tick (\d+)$", follower.line(60))
                if m:
                    seen.append(int(m.group(1)))
                    return seen[-1]

        next_tick()
        pvc("vm", "migrate", "demo1", "--target", other, "--wait")
        assert where(pvc)["demo1"] == [other]
        after = next_tick()
        while next_tick() < after + 2:    # a few ticks printed on the new node
            pass
    # every tick exactly once, in order, nothing lost at the switch-over
    assert seen == list(range(seen[0], seen[0] + len(seen))), seen
    pvc("vm", "unmigrate", "demo1", "--wait")


def test_live_migration_over_its_time_limit_is_aborted(pvc) -> None:
    assert where(pvc)["demo1"] == ["hv1"]
    # 1 MiB/s for a 128 MiB guest: far longer than the 2 s limit
    res = pvc("vm", "migrate", "demo1", "--target", "hv2", "--force-live", "--timeout", "2",
              "--bandwidth", "1", "--wait", ok=False)
    assert res.returncode == 1
    assert "did not finish within 2s and was aborted" in res.stderr
    info = pvc.json("vm", "info", "demo1")
    assert (info["running_on"], info["node"]) == (["hv1"], "hv1")   # exactly one node
    assert "aborted" in info["failure"] and info["operation"] == ""
    before = max(ticks(console(pvc, "hv1", "demo1")))
    wait_until("demo1 to keep ticking on hv1",
               lambda: max(ticks(console(pvc, "hv1", "demo1"))) > before, 60)


def test_cancel_a_running_flush_stops_after_the_move_in_flight(pvc) -> None:
    for vm in ("demo2", "demo3"):
        if where(pvc)[vm] != ["hv1"]:
            pvc("vm", "move", vm, "--target", "hv1", "--wait")
    op = pvc("node", "flush", "hv1").stdout.split("operation ")[1].split()[0]
    # one migration at a time (3 s each): cancel while the first is in flight
    wait_until("the flush to be moving VMs", lambda: pvc.json("task", "show", op)
               .get("progress", {}).get("total") == 3, 120)
    out = pvc("task", "cancel", op).stdout
    assert "will stop after the migrations in flight" in out
    res = pvc("task", "watch", op, ok=False, timeout=300)
    assert res.returncode == 1
    record = pvc.json("task", "show", op)
    assert record["state"] == "cancelled" and "stays flushing" in record["message"]
    moved = [vm for vm, s in record["progress"]["items"].items() if "→" in s]
    left = [vm for vm, s in record["progress"]["items"].items() if "cancelled" in s]
    assert moved and left and len(moved) + len(left) == 3
    # nothing lost: every VM runs exactly once, where its record says
    for vm, nodes in where(pvc).items():
        assert nodes == (["hv2"] if vm in moved else ["hv1"]), (vm, nodes)
    assert pvc.json("node", "info", "hv1")["domain_state"] == "flushing"
    pvc("node", "unflush", "hv1", "--wait", timeout=300)
    assert where(pvc) == {"demo1": ["hv1"], "demo2": ["hv1"], "demo3": ["hv1"]}


def test_worker_killed_mid_flush_finishes_with_every_vm_running_once(pvc) -> None:
    """The whole worker (main process and pool) is killed; the supervisor starts it again and
    the flush's task comes back to it."""
    if where(pvc)["demo2"] != ["hv1"]:     # move: hv1 becomes its home (no last node)
        pvc("vm", "move", "demo2", "--target", "hv1", "--wait")
    everything_on_hv1 = {"demo1": ["hv1"], "demo2": ["hv1"], "demo3": ["hv1"]}
    assert where(pvc) == everything_on_hv1
    out = pvc("node", "flush", "hv1").stdout
    op = out.split("operation ")[1].split()[0]
    wait_until("the first VM to move", lambda: pvc.json("task", "show", op)
               .get("progress", {}).get("done", 0) >= 1, 120)
    worker = pvc.status()["processes"]["worker-hv1"]
    os.killpg(worker["pid"], signal.SIGKILL)   # the whole worker: main process and pool
    wait_until("the supervisor to start the worker again",
               lambda: pvc.status()["processes"]["worker-hv1"]["restarts"]
               > worker["restarts"], 60)
    pvc("task", "watch", op, timeout=300)
    record = pvc.json("task", "show", op)
    assert record["state"] == "succeeded" and record["attempts"] == 2
    assert record["progress"]["done"] == record["progress"]["total"] == 3   # counted whole
    assert set(record["progress"]["outcomes"].values()) == {"moved"}
    assert where(pvc) == {vm: ["hv2"] for vm in everything_on_hv1}
    assert pvc.json("node", "info", "hv1")["domain_state"] == "flushed"
    pvc("node", "unflush", "hv1", "--wait", timeout=300)
    assert where(pvc) == everything_on_hv1


def test_a_guest_leases_an_address_and_stays_reachable_across_a_live_migration(pvc) -> None:
    """The demo guests are on managed network 100: their initramfs asks for a lease, which
    the primary's dnsmasq grants and records; a live migration keeps the guest answering."""
    def lease() -> dict:
        found = [x for x in pvc.json("network", "leases", "100") if x["hostname"] == "demo2"]
        return found[0] if found else {}

    address = wait_until("demo2's lease", lease, 120)["ip"]
    net = sb.Layout(Path(pvc.env["PVC_SANDBOX_DIR"]), int(pvc.offset)).net
    gateway_ns = net.ns(pvc.json("cluster", "status")["primary"])

    def answers() -> bool:
        return subprocess.run(["ip", "netns", "exec", gateway_ns, "ping", "-c", "1", "-W", "1",
                               address], capture_output=True).returncode == 0

    wait_until("demo2 answering its gateway", answers, 30)
    home = where(pvc)["demo2"][0]
    other = "hv2" if home == "hv1" else "hv1"
    pvc("vm", "migrate", "demo2", "--target", other, "--wait")
    assert where(pvc)["demo2"] == [other]
    wait_until("demo2 answering after the migration", answers, 30)
    assert lease()["ip"] == address                 # the same lease, renewed in place
    pvc("vm", "unmigrate", "demo2", "--wait")
