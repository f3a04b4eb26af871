"""Resident memory (PSS, from /proc/PID/smaps_rollup) of the default sandbox: 3 `qemu` nodes
with their demo VMs, every process it started and their children (QEMU guests included), and
of one idle node's pvc processes (node daemon, Celery worker with its pool, console tailer)."""
from __future__ import annotations

import json
from pathlib import Path

from bench.common import BENCH_SANDBOX_DIR, BenchSandbox, descendants, pss_kib, record


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
