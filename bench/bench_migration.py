"""Live migration of one sandbox `qemu` guest (128 MiB, TCG) between two nodes: total time of
the operation and the downtime libvirt reports, over several round trips."""
from __future__ import annotations

import re
import statistics

from bench.common import BenchSandbox, record

ROUNDS = 6


def main() -> None:
    with BenchSandbox("qemu", nodes=2, vms=1) as sb:
        totals, downtimes, ops = [], [], []
        for i in range(ROUNDS):
            target = "hv2" if i % 2 == 0 else "hv1"
            rec = sb.watch(sb.submit("vm", "migrate", "demo1", "--target", target,
                                     "--force-live"))
            assert rec["state"] == "succeeded", rec
            m = re.search(r"\(live, ([\d.]+)s, downtime (\d+) ms\)", rec["message"])
            assert m, rec["message"]
            totals.append(float(m.group(1)))
            downtimes.append(int(m.group(2)))
            ops.append(rec["finished"] - rec["started"])
    record("live migration: one 128 MiB qemu guest (TCG) between two sandbox nodes", {
        "n": ROUNDS,
        "libvirt migration median s": round(statistics.median(totals), 2),
        "whole operation median s": round(statistics.median(ops), 2),
        "downtime median ms": statistics.median(downtimes),
        "downtime max ms": max(downtimes),
    })


if __name__ == "__main__":
    main()
