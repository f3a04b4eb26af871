"""What an operator feels at scale: whole `pvc` processes (start-up, imports, ZooKeeper reads,
drawing) on a test-kind sandbox of 3 nodes with 100, then 1000 VMs, each figure the median of
several runs beside a bare `python3 -c pass` of the same run (the machine is noisy: the ratio
says more than the milliseconds). Issue 22's aims: vm list < 80 ms at 100 VMs and < 100 ms at
1000, cluster status < 100 / 150 ms, `--help` < 60 ms."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BenchSandbox, record

RUNS = 9
PVC = str(Path(sys.executable).with_name("pvc"))


def median_ms(args: list[str], env: dict[str, str] | None = None) -> float:
    subprocess.run(args, env=env, capture_output=True, check=True)   # warm the page cache
    samples = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run(args, env=env, capture_output=True, check=True)
        samples.append(time.perf_counter() - t0)
    return round(statistics.median(samples) * 1000, 1)


def figures(sb: BenchSandbox) -> dict[str, Any]:
    bare = median_ms(["/usr/bin/python3", "-c", "pass"])
    out: dict[str, Any] = {"python3 -c pass ms": bare}
    for label, args in (("pvc --help", ["--help"]), ("vm list", ["vm", "list"]),
                        ("vm list --format json", ["vm", "list", "--format", "json"]),
                        ("cluster status", ["cluster", "status"]),
                        ("node list", ["node", "list"])):
        ms = median_ms([PVC, *args], sb.env)
        out[f"{label} ms"] = ms
        out[f"{label} / bare"] = round(ms / bare, 1)
    return out


def main() -> None:
    for count in (100, 1000):
        with BenchSandbox("test", nodes=3, vms=count) as sb:
            record(f"cli at scale: whole processes, 3 nodes, {count} VMs (test kind)",
                   figures(sb), target="vm list < 80 ms (100), < 100 ms (1000)")


if __name__ == "__main__":
    main()
