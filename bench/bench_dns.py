"""Managed networks and DNS: how soon a DHCP lease is a name PowerDNS answers, and how many DNS
answers are lost while the primary (gateway, aggregator, database leader, floating IP) moves.

  * lease → answered: a guest (a namespace on a node's bridge running udhcpc) takes a lease;
    time from udhcpc's start until PowerDNS on the floating IP answers its name (queried every
    20 ms). The original polled every 10 s.
  * a query every 50 ms to PowerDNS on the floating IP (for a name already published) from the
    host during `pvc node primary NODE --wait`: answers lost.

Measured on a test-driver sandbox (3 nodes) with its database and DNS.
"""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_OFFSET, BENCH_SANDBOX_DIR, BenchSandbox, record, summary_ms

LEASES = 8
SWITCHOVERS = 4
QUERY_INTERVAL = 0.05


def _layout() -> Any:
    from pvc.sandbox import sandbox as sb
    return sb.Layout(Path(BENCH_SANDBOX_DIR), int(BENCH_OFFSET))


def dig(address: str, name: str, timeout: float = 1.0) -> str:
    res = subprocess.run(["dig", "+short", f"+time={max(1, int(timeout))}", "+tries=1",
                          f"@{address}", name], capture_output=True, text=True)
    return res.stdout.strip()


def guest(layout: Any, node: str, name: str) -> str:
    """A namespace on node's vmbr100; its name."""
    from pvc.network import ip
    ns = f"{layout.net.prefix}-b{name}"
    ip.add_netns(ns)
    port = f"b-{name}"[:15]
    ip.add_veth("eth0", ns, port, layout.net.ns(node))
    ip.set_master(port, "vmbr100", layout.net.ns(node))
    return ns


def lease_to_answer(layout: Any, fip: str, node: str, i: int) -> float:
    from pvc.network import ip
    name = f"bench{i}"
    ns = guest(layout, node, name)
    try:
        t0 = time.perf_counter()
        subprocess.run(ip.in_netns(ns, ["udhcpc", "-i", "eth0", "-n", "-q", "-T", "1", "-A",
                                        "1", "-t", "5", "-x", f"hostname:{name}", "-F", name,
                                        "-s", "/bin/true"]), check=True, capture_output=True)
        while not dig(fip, f"{name}.sandbox.pvc"):
            if time.perf_counter() - t0 > 60:
                raise RuntimeError(f"{name} never answered")
            time.sleep(0.02)   # sampling PowerDNS from outside
        return time.perf_counter() - t0
    finally:
        ip.del_netns(ns)


class Asker:
    """Queries PowerDNS on the floating IP every 50 ms; counts answers and losses."""

    def __init__(self, fip: str, name: str, expected: str) -> None:
        self.fip, self.name, self.expected = fip, name, expected
        self.sent = self.lost = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            t0 = time.perf_counter()
            self.sent += 1
            if dig(self.fip, self.name) != self.expected:
                self.lost += 1
            time.sleep(max(0.0, QUERY_INTERVAL - (time.perf_counter() - t0)))

    def stop(self) -> tuple[int, int]:
        self.stopping.set()
        self.thread.join()
        return self.sent, self.lost


def main() -> None:
    with BenchSandbox("test", nodes=3, vms=3, database=True) as sb:
        layout = _layout()
        fip = layout.net.floating_ip.split("/")[0]
        nodes = ["hv1", "hv2", "hv3"]
        times = [lease_to_answer(layout, fip, nodes[i % 3], i) for i in range(LEASES)]
        losses, sent_total = [], 0
        for i in range(SWITCHOVERS):
            status = sb.pvc("cluster", "status", "--format", "json").stdout
            primary = json.loads(status)["primary"]
            target = nodes[(nodes.index(primary) + 1) % 3]
            asker = Asker(fip, "ns1.sandbox.pvc", "10.100.0.1")
            time.sleep(0.5)
            sb.pvc("node", "primary", target, "--wait")
            time.sleep(0.5)
            sent, lost = asker.stop()
            sent_total += sent
            losses.append(lost)
    record("DNS: a DHCP lease → its name answered by PowerDNS", {
        "udhcpc start → answered on the floating IP": summary_ms(times),
    }, "< 1 s (the original polled every 10 s)")
    record("DNS answers during a primary switchover", {
        "queries every 50 ms to the floating IP: unanswered per switchover": losses,
        "queries sent": sent_total,
    })


if __name__ == "__main__":
    main()
