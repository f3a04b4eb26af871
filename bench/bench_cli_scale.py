"""What an operator feels at scale: whole `pvc` processes (start-up, imports, ZooKeeper reads,
drawing) on a test-kind sandbox of 3 nodes with 100, then 1000 VMs, each figure the median of
several runs beside a bare `python3 -c pass` of the same run (the machine is noisy: the ratio
says more than the milliseconds). The VMs are defined and started through the CLI, one command
each. Issue 22's aims: vm list < 80 ms at 100 VMs and < 100 ms at 1000, cluster status < 100 /
150 ms, `--help` < 60 ms, `vm start --wait` < 150 ms, 1000 VMs defined and started < 30 s."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import BenchSandbox, bare_python_ms, define_and_start, median_ms, record

PVC = str(Path(sys.executable).with_name("pvc"))


def figures(sb: BenchSandbox) -> dict[str, Any]:
    bare = bare_python_ms()
    out: dict[str, Any] = {"python3 -c pass ms": bare}
    for label, args, between in (
            ("pvc --help", ["--help"], None),
            ("vm list", ["vm", "list"], None),
            ("vm list --format json", ["vm", "list", "--format", "json"], None),
            ("cluster status", ["cluster", "status"], None),
            ("node list", ["node", "list"], None),
            ("vm start VM --wait", ["vm", "start", "s1", "--wait"],
             [PVC, "vm", "stop", "s1", "--yes", "--wait"])):
        ms = median_ms([PVC, *args], sb.env, between=between)
        out[f"{label} ms"] = ms
        out[f"{label} / bare"] = round(ms / bare, 1)
    return out


def main() -> None:
    for count in (100, 1000):
        with BenchSandbox("test", nodes=3, vms=0) as sb, \
                tempfile.TemporaryDirectory() as tmp:
            made = define_and_start(sb, count, Path(tmp))
            record(f"cli at scale: whole processes, 3 nodes, {count} VMs (test kind)",
                   {**made, **figures(sb)},
                   target="vm list < 80 ms (100), < 100 ms (1000); cluster status < 100 / "
                          "150 ms; --help < 60 ms; vm start --wait < 150 ms; 1000 VMs "
                          "defined and started < 30 s")


if __name__ == "__main__":
    main()
