"""How cost grows: a test-kind sandbox of 10 nodes with 3000 VMs against one of 3 nodes with
300, in the same run (each node serves 100 VMs in the first, 300 in the second).

For each: the VMs defined and started through the CLI; one node's periodic reconcile (what
every daemon does at each keepalive: read the cluster's VMs, compare with libvirt's, publish);
`vm list` and `cluster status` as whole processes; `vm list --watch`'s redraw after a change;
a flush of one node (all its VMs); ZooKeeper's znodes, bytes and watches (its `mntr`); and the
memory (PSS) of each kind of pvc process. Then the ratio of each figure, large to small, beside
the ratio of what it serves: anything that grows faster than that is a finding
(bench/results.md, README "How cost grows")."""
from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_SANDBOX_DIR,
    BenchSandbox,
    bare_python_ms,
    define_and_start,
    descendants,
    median_ms,
    pss_kib,
    record,
)

PVC = str(Path(sys.executable).with_name("pvc"))
SIZES = ((3, 300), (10, 3000))
# the flush moves a whole node: let it run as wide as the configuration allows
LIMITS = {"PVC_CLUSTER__MIGRATION__MAX_PARALLEL": "64",
          "PVC_CLUSTER__MIGRATION__PER_SOURCE": "64",
          "PVC_CLUSTER__MIGRATION__PER_TARGET": "16"}


def reconcile_ms(node: str, rounds: int = 5) -> tuple[float, int]:
    """One node's reconcile with everything in place, in this process with the node's own
    configuration (median ms), and how many VMs it read."""
    from pvc.core import config as configmod
    from pvc.node import reconcile
    from pvc.node.context import NodeContext
    ctx = NodeContext(configmod.load(f"{BENCH_SANDBOX_DIR}/nodes/{node}/pvc.yaml"))
    try:
        results = [reconcile.reconcile(ctx) for _ in range(rounds)]
    finally:
        ctx.close()
    assert all(not r.started and not r.stopped for r in results), results[-1].sentence()
    return round(statistics.median(r.seconds for r in results) * 1000, 1), results[0].vms


def redraw_ms(sb: BenchSandbox, rounds: int = 9) -> float:
    """A VM's `vm meta` committed → `vm list --watch --format json` printed the new view."""
    from pvc.core.cluster import Cluster
    from pvc.vm import changes
    watcher = subprocess.Popen([PVC, "vm", "list", "--watch", "--format", "json"],
                               env=sb.env, stdout=subprocess.PIPE, text=True)
    views: list[tuple[float, list[dict[str, Any]]]] = []
    arrived = threading.Condition()

    def pump() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            with arrived:
                views.append((time.perf_counter(), json.loads(line)))
                arrived.notify_all()
    threading.Thread(target=pump, daemon=True).start()
    cluster = Cluster.connect(sb.config())
    samples = []
    try:
        with arrived:
            arrived.wait_for(lambda: views, timeout=60)
        for i in range(rounds):
            wanted = i % 2 == 0
            changes.meta(cluster, "s1", autostart=wanted)
            committed = time.perf_counter()
            with arrived:
                assert arrived.wait_for(lambda: _shows(views, wanted), timeout=60)
                samples.append(next(at for at, view in views if _autostart(view) == wanted
                                    and at >= committed) - committed)
                views.clear()
    finally:
        cluster.close()
        watcher.terminate()
        watcher.wait(10)
    return round(statistics.median(samples) * 1000, 1)


def _autostart(view: list[dict[str, Any]]) -> bool:
    return bool(next(v for v in view if v["name"] == "s1")["autostart"])


def _shows(views: list[tuple[float, list[dict[str, Any]]]], wanted: bool) -> bool:
    return any(_autostart(view) == wanted for _, view in views)


def flush_s(sb: BenchSandbox) -> tuple[float, int]:
    """A flush of hv2 (not the primary): seconds from the lock to the last VM moved; how
    many VMs it moved. Unflushed afterwards."""
    rec = sb.watch(sb.submit("node", "flush", "hv2", "--yes"))
    assert rec["state"] == "succeeded", rec
    back = sb.watch(sb.submit("node", "unflush", "hv2"))
    assert back["state"] == "succeeded", back
    return round(rec["finished"] - rec["lock_acquired"], 2), rec["progress"]["total"]


def zookeeper_figures(sb: BenchSandbox) -> dict[str, int]:
    """The leader's own count of znodes, their bytes, and the watches it holds (each member
    holds those of its clients: summed over the members)."""
    hosts = sb.config().cluster.zookeeper.hosts.split(",")
    out: dict[str, int] = {"watches": 0}
    for host in hosts:
        name, port = host.rsplit(":", 1)
        stats = _mntr(name, int(port))
        out["watches"] += stats.get("zk_watch_count", 0)
        if stats.get("zk_server_state") == "leader":
            out["znodes"] = stats["zk_znode_count"]
            out["bytes"] = stats["zk_approximate_data_size"]
    return out


def _mntr(host: str, port: int) -> dict[str, Any]:
    answer = b""
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"mntr")
        while chunk := s.recv(65536):
            answer += chunk
    out: dict[str, Any] = {}
    for line in answer.decode().splitlines():
        key, _, value = line.partition("\t")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def memory_mib() -> dict[str, float]:
    """PSS of each kind of pvc process (with its children: the worker's pool), the median
    and the largest over the nodes."""
    pids = json.loads(Path(BENCH_SANDBOX_DIR, "state.json").read_text())["pids"]
    out = {}
    for kind in ("node", "worker", "tailer"):
        sizes = [sum(pss_kib(p) for p in descendants(pid)) / 1024
                 for name, pid in pids.items() if name.startswith(f"{kind}-")]
        out[f"{kind}: median MiB"] = round(statistics.median(sizes), 1)
        out[f"{kind}: largest MiB"] = round(max(sizes), 1)
    return out


def measure(nodes: int, vms: int) -> dict[str, Any]:
    with BenchSandbox("test", nodes=nodes, vms=0, env=LIMITS) as sb, \
            tempfile.TemporaryDirectory() as tmp:
        figures: dict[str, Any] = {"python3 -c pass ms": bare_python_ms()}
        figures.update(define_and_start(sb, vms, Path(tmp)))
        figures["reconcile of one node ms"], figures["VMs a reconcile reads"] = \
            reconcile_ms("hv2")
        for label, args in (("vm list", ["vm", "list"]), ("cluster status",
                                                          ["cluster", "status"])):
            figures[f"{label} ms"] = median_ms([PVC, *args], sb.env, runs=5)
        figures["vm list --watch redraw ms"] = redraw_ms(sb)
        figures.update({f"zookeeper {k}": v for k, v in zookeeper_figures(sb).items()})
        figures.update(memory_mib())
        figures["flush of one node s"], figures["VMs the flush moved"] = flush_s(sb)
        return figures


def main() -> None:
    runs = {}
    for nodes, vms in SIZES:
        runs[(nodes, vms)] = measure(nodes, vms)
        record(f"scale: {nodes} nodes, {vms} VMs (test kind)", runs[(nodes, vms)])
    (small_n, small_v), (large_n, large_v) = SIZES
    small, large = runs[SIZES[0]], runs[SIZES[1]]
    ratios = {f"VMs ({large_v} / {small_v})": round(large_v / small_v, 1),
              f"VMs per node ({large_v // large_n} / {small_v // small_n})":
                  round((large_v / large_n) / (small_v / small_n), 1)}
    for key, value in large.items():
        if isinstance(value, (int, float)) and small.get(key) and "python3" not in key:
            ratios[key] = round(value / small[key], 2)
    record(f"scale: growth from {small_n} nodes / {small_v} VMs to {large_n} / {large_v}",
           ratios, target="nothing grows faster than what it serves (VMs: 10x; per node: 3x)")


if __name__ == "__main__":
    main()
