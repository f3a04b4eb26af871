"""Storage on the sandbox's Ceph (a monitor and a manager on each of three coordinators, a
bluestore OSD on a sparse file on each node, three replicas; all on this machine's one disk):

- how long `sandbox up` spends bringing Ceph to healthy;
- a volume's throughput and IOPS as a guest sees them (busybox dd in the TCG guest, O_DIRECT,
  one request at a time: 4 MiB sequential and 4 KiB writes and reads);
- live migration of a guest with an RBD disk beside one without;
- a flush of a node whose VMs have disks, and its unflush.
"""
from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

from bench.common import BENCH_SANDBOX_DIR, BenchSandbox, record

ROUNDS = 4
BENCH_MIB = 256     # each sequential pass (the guest times to 0.01 s)
STEP = re.compile(r"\[\s*([\d.]+)s\] (.*)")
DD = re.compile(r"pvc-bench (\S+) (\d+) ([\d.]+) ([\d.]+)")


def _steps(output: str) -> dict[str, float]:
    """`sandbox up`'s steps: what it said → seconds since it began."""
    return {m.group(2): float(m.group(1)) for m in map(STEP.match, output.splitlines()) if m}


def startup(sb: BenchSandbox) -> dict[str, float]:
    steps = _steps(sb.up_output)
    ceph = next(t for s, t in steps.items() if s.startswith("Ceph:"))
    before = max(t for t in steps.values() if t < ceph)
    return {"sandbox up → Ceph healthy (s since up began)": ceph,
            "Ceph's own start: quorum, OSDs, pool, clean (s)": round(ceph - before, 1),
            "sandbox up, whole (s)": max(steps.values())}


def _define(sb: BenchSandbox, name: str, index: int, disk: str, cmdline: str = "") -> None:
    from pvc.sandbox.sandbox import demo_xml
    xml = demo_xml(name, "qemu", index, disk)
    if cmdline:
        xml = xml.replace("</cmdline>", f" {cmdline}</cmdline>")
    path = Path(BENCH_SANDBOX_DIR) / f"{name}.xml"
    path.write_text(xml)
    sb.pvc("vm", "define", str(path), "--node", "hv1")


def guest_io(sb: BenchSandbox) -> dict[str, float]:
    """A guest that runs dd against its disk at boot and prints each summary."""
    sb.pvc("storage", "volume", "add", "vms/bench-disk", f"{BENCH_MIB + 64}M")
    _define(sb, "bench", 90, "vms/bench-disk", f"pvc.bench={BENCH_MIB}")
    sb.pvc("vm", "start", "bench", "--wait")
    deadline = time.monotonic() + 300
    log = ""
    while "pvc-bench done" not in log:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the guest's dd did not finish: {log[-500:]}")
        time.sleep(1)
        log = sb.pvc("vm", "log", "bench", "--lines", "100").stdout
    found = {m.group(1): (int(m.group(2)), float(m.group(4)) - float(m.group(3)))
             for m in map(DD.search, log.splitlines()) if m}
    sb.pvc("vm", "stop", "bench", "--wait")

    def mib_s(name: str) -> float:
        size, seconds = found[name]
        return round(size / 1024 ** 2 / seconds, 1)

    def iops(name: str) -> int:
        size, seconds = found[name]
        return round(size / 4096 / seconds)
    return {"sequential write 4 MiB, MiB/s": mib_s("seq-write-4M"),
            "sequential read 4 MiB, MiB/s": mib_s("seq-read-4M"),
            "4 KiB writes, one at a time, IOPS": iops("write-4K-qd1"),
            "4 KiB reads, one at a time, IOPS": iops("read-4K-qd1")}


def migrations(sb: BenchSandbox) -> dict[str, float]:
    """The same guest with and without a disk, live-migrated hv1 ↔ hv2."""
    _define(sb, "nodisk", 91, "")
    sb.pvc("vm", "start", "nodisk", "--wait")
    out: dict[str, float] = {}
    for vm, label in (("demo1", "with an RBD disk"), ("nodisk", "without a disk")):
        sb.pvc("vm", "migrate", vm, "--target", "hv1", "--wait", check=False)
        totals, downtimes = [], []
        for i in range(ROUNDS):
            rec = sb.watch(sb.submit("vm", "migrate", vm, "--target",
                                     "hv2" if i % 2 == 0 else "hv1", "--force-live"))
            assert rec["state"] == "succeeded", rec
            m = re.search(r"\(live, ([\d.]+)s, downtime (\d+) ms\)", rec["message"])
            assert m, rec["message"]
            totals.append(float(m.group(1)))
            downtimes.append(int(m.group(2)))
        out[f"live migration {label}: median s"] = round(statistics.median(totals), 2)
        out[f"live migration {label}: downtime median ms"] = statistics.median(downtimes)
    sb.pvc("vm", "stop", "nodisk", "--wait")
    return out


def flushes(sb: BenchSandbox) -> dict[str, float]:
    """Flush and unflush hv3, whose demo VMs have disks."""
    flush, unflush = [], []
    for _ in range(2):
        rec = sb.watch(sb.submit("node", "flush", "hv3"))
        assert rec["state"] == "succeeded", rec
        flush.append(rec["finished"] - rec["started"])
        rec = sb.watch(sb.submit("node", "unflush", "hv3"))
        assert rec["state"] == "succeeded", rec
        unflush.append(rec["finished"] - rec["started"])
    return {"flush of hv3 (2 VMs with disks, noout set): median s":
            round(statistics.median(flush), 2),
            "unflush of hv3 (noout cleared): median s": round(statistics.median(unflush), 2)}


def main() -> None:
    with BenchSandbox("qemu", nodes=3, vms=6, storage=True) as sb:
        figures = {**startup(sb), **guest_io(sb), **migrations(sb), **flushes(sb)}
    record("storage: Ceph in the sandbox, RBD disks of qemu guests (TCG)", figures)


if __name__ == "__main__":
    main()
