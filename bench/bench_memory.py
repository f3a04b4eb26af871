"""Resident memory (PSS, from /proc/PID/smaps_rollup) of the default sandbox: 3 `qemu` nodes
with their demo VMs, every process it started and their children (QEMU guests included), and
of one idle node's pvc processes (node daemon, Celery worker with its pool, console tailer).

Then the worker's pool and concurrency (issue 22: one idle node's pvc processes under 100 MiB):
for each, on a test-kind sandbox of 3 nodes and 30 VMs, the node's pvc processes (PSS), and
how it serves operations: `vm start --wait` as a whole process, a batch restart of 30 VMs,
and a flush of a node."""
from __future__ import annotations

import json
from pathlib import Path

from bench.common import (
    BENCH_SANDBOX_DIR,
    BenchSandbox,
    descendants,
    median_ms,
    pss_kib,
    record,
)

POOLS = (("threads", 2), ("threads", 4), ("prefork", 2), ("prefork", 1))


def main() -> None:
    with BenchSandbox("qemu", nodes=3, vms=3):
        state = json.loads(Path(BENCH_SANDBOX_DIR, "state.json").read_text())
        groups: dict[str, int] = {}
        seen: set[int] = set()
        for name, pid in state["pids"].items():
            group = name.split("-")[0]
            for p in descendants(pid):
                if p not in seen:
                    seen.add(p)
                    groups[group] = groups.get(group, 0) + pss_kib(p)
        # libvirt keeps each guest's QEMU pid under its (bind-mounted) /run/libvirt/qemu
        qemu = [int(f.read_text()) for f in Path(BENCH_SANDBOX_DIR).glob(
            "nodes/*/libvirt/run/qemu/*.pid") if f.name != "driver.pid"]
        guests = sum(pss_kib(p) for p in qemu if p not in seen)
        virtlogd = sum(pss_kib(p) for p in _virtlogds() if p not in seen)
        total = sum(groups.values()) + guests + virtlogd
        node1 = sum(pss_kib(p) for key in ("node-hv1", "worker-hv1", "tailer-hv1")
                    for p in descendants(state["pids"][key]))
    figures = {f"{g} (MiB)": round(kib / 1024, 1) for g, kib in sorted(groups.items())}
    figures["virtlogd (MiB)"] = round(virtlogd / 1024, 1)
    figures[f"{len(qemu)} QEMU guests (MiB)"] = round(guests / 1024, 1)
    figures["whole sandbox (MiB)"] = round(total / 1024, 1)
    figures["one idle node's pvc processes: daemon + worker + tailer (MiB)"] = \
        round(node1 / 1024, 1)
    record("memory: default sandbox (3 qemu nodes, 3 demo VMs), PSS", figures)
    pools()


def pools() -> None:
    import sys
    import time
    pvc = str(Path(sys.executable).with_name("pvc"))
    out: dict[str, float] = {}
    for pool, concurrency in POOLS:
        label = f"{pool} x{concurrency}"
        env = {"PVC_NODE__WORKER_POOL": pool, "PVC_NODE__WORKER_CONCURRENCY": str(concurrency)}
        with BenchSandbox("test", nodes=3, vms=30, env=env) as sb:
            time.sleep(5)   # idle: the start-up's work done
            pids = json.loads(Path(BENCH_SANDBOX_DIR, "state.json").read_text())["pids"]
            for kind in ("node", "worker", "tailer"):
                out[f"{label}: {kind} MiB"] = round(sum(
                    pss_kib(p) for p in descendants(pids[f"{kind}-hv2"])) / 1024, 1)
            out[f"{label}: node + worker + tailer MiB"] = round(sum(
                out[f"{label}: {k} MiB"] for k in ("node", "worker", "tailer")), 1)
            out[f"{label}: vm start --wait ms"] = median_ms(
                [pvc, "vm", "start", "demo2", "--wait"], sb.env, runs=5,
                between=[pvc, "vm", "stop", "demo2", "--yes", "--wait"])
            t0 = time.perf_counter()
            sb.pvc("vm", "restart", "--all", "--yes", "--wait")
            out[f"{label}: restart 30 VMs --wait s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            sb.pvc("node", "flush", "hv2", "--wait", "--yes")
            out[f"{label}: flush of 10 VMs s"] = round(time.perf_counter() - t0, 2)
    record("memory: one node's pvc processes by worker pool (test kind, 3 nodes, 30 VMs)",
           out, target="one idle node's pvc processes < 100 MiB PSS")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _virtlogds() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and "virtlogd" in _cmdline(int(p.name)) and BENCH_SANDBOX_DIR in _cmdline(int(p.name))]


if __name__ == "__main__":
    main()
