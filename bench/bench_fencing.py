"""Fencing: a node's daemon hangs (SIGSTOP) → the node is fenced over its BMC → its VMs run
on the other nodes. Time from the hang until every one of its VMs runs elsewhere, and until
the fence operation ended, over ROUNDS runs on a test-driver sandbox (3 nodes, keepalives
every 2 s; the sandbox fences after 6 missed keepalives and 2 more checks). The original
waits 6 intervals of 5 s plus its IPMI calls (≥ 30 s), then 6 saving throws.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_OFFSET, BENCH_SANDBOX_DIR, BenchSandbox, record, summary_ms
from pvc.core.timefmt import times_as_epoch

ROUNDS = 3


def _hv(layout: Any, node: str, index: int) -> Any:
    from pvc.hypervisor.adapter import LibvirtHypervisor
    return LibvirtHypervisor(layout.libvirtd(node, index).uri("test")).connect()


def main() -> None:
    from pvc.sandbox import sandbox as sb
    from pvc.sandbox.supervisor import Supervisor
    layout = sb.Layout(Path(BENCH_SANDBOX_DIR), int(BENCH_OFFSET))
    nodes = ["hv1", "hv2", "hv3"]
    to_elsewhere, to_fenced = [], []
    with BenchSandbox("test", nodes=3, vms=6) as box:
        sup = Supervisor(Path(BENCH_SANDBOX_DIR))
        for i in range(ROUNDS):
            primary = json.loads(box.pvc("cluster", "status", "--format", "json").stdout)[
                "primary"]
            dead = [n for n in nodes if n != primary][i % 2]
            alive = [n for n in nodes if n != dead]
            vms = json.loads(box.pvc("vm", "list", "--format", "json").stdout)
            mine = {v["name"] for v in vms if v["node"] == dead and v["state"] == "start"}
            hvs = [_hv(layout, n, nodes.index(n) + 1) for n in alive]
            pid = int(sup.info(f"node-{dead}")["pid"])
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGSTOP)
            while True:
                running = {d.name for hv in hvs for d in hv.running().values()}
                if mine <= running:
                    break
                if time.perf_counter() - t0 > 180:
                    raise RuntimeError(f"{dead}'s VMs never ran elsewhere")
                time.sleep(0.1)   # sampling the libvirtds from outside
            to_elsewhere.append(time.perf_counter() - t0)
            while json.loads(box.pvc("node", "info", dead, "--format", "json").stdout)[
                    "daemon_state"] != "fenced":
                time.sleep(0.1)
            fences = [o for o in times_as_epoch(json.loads(
                      box.pvc("task", "list", "--format", "json").stdout))
                      if o["kind"] == "node.fence" and o["target"] == dead]
            last = max(fences, key=lambda o: o["created"])
            to_fenced.append(last["finished"] - last["created"])
            for hv in hvs:
                hv.close()
            box.pvc("node", "power", dead, "on")
            while True:
                info = json.loads(box.pvc("node", "info", dead, "--format", "json").stdout)
                if info["daemon_state"] == "run" and info["workers"]:
                    break
                time.sleep(0.2)
            box.pvc("node", "unflush", dead, "--wait")
    record("fencing: a node's daemon hung → its VMs running elsewhere", {
        "hang → every one of its VMs running on another node": summary_ms(to_elsewhere),
        "the node.fence operation itself (power off confirmed, VMs placed)":
            summary_ms(to_fenced),
    }, "safe defaults: ~45 s with 5 s keepalives (the sandbox's 2 s keepalives: ~16 s)")


if __name__ == "__main__":
    main()
