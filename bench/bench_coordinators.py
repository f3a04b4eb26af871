"""Coordinators: switchover end to end, packets lost on the floating IP meanwhile, and the
election after the primary's daemon dies.

  * `pvc node primary NODE --wait`, wall clock as the operator sees it (the floating IP moved,
    the Patroni leader moved, the new primary's services up), over ROUNDS switchovers.
  * A client on the cluster network (its own namespace) pings the floating IP every 20 ms
    during each switchover: packets lost (upstream loses 1-2 at 25 ms and takes 5-10 s).
  * The primary's daemon killed (SIGKILL; the supervisor starts it again) and hung (SIGSTOP:
    its session expires): time until a primary holds the role and the floating IP again, and
    until the database leader is on it.

Measured on a test-driver sandbox (3 nodes) with its database (Patroni on each coordinator).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import BENCH_OFFSET, BENCH_SANDBOX_DIR, BenchSandbox, record, summary_ms

ROUNDS = 6
PING_INTERVAL = 0.02
POLL = 0.02   # sampling the cluster from outside


def _layout() -> Any:
    from pvc.sandbox import sandbox as sb
    return sb.Layout(Path(BENCH_SANDBOX_DIR), int(BENCH_OFFSET))


def _until(condition: Callable[[], Any], timeout: float = 120) -> float:
    """Seconds until condition holds, sampled every POLL."""
    t0 = time.perf_counter()
    while not condition():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError("condition not reached in time")
        time.sleep(POLL)
    return time.perf_counter() - t0


class Probe:
    """The cluster as the benchmark sees it: who is the primary, who holds the IP, who leads
    the database."""

    def __init__(self, sb: BenchSandbox) -> None:
        from pvc.coordinator.database import patroni_for
        from pvc.core.cluster import Cluster
        self.cluster = Cluster.connect(sb.config())
        self.layout = _layout()
        self.nodes = [n.name for n in self.cluster.nodes()]
        patroni = patroni_for(self.cluster.config, self.cluster.nodes())
        assert patroni is not None
        self.patroni = patroni

    def primary(self) -> str:
        return self.cluster.store.get_text(self.cluster.schema.primary) or ""

    def ip_on(self, node: str) -> bool:
        from pvc.network import ip
        net = self.layout.net
        return ip.has_address("cl0", net.floating_ip, netns=net.ns(node))

    def serving(self, node: str) -> bool:
        return self.primary() == node and self.ip_on(node)

    def leader(self) -> str:
        try:
            return self.patroni.cluster().leader
        except Exception:
            return ""

    def close(self) -> None:
        self.cluster.close()


class Ping:
    """ping -i 0.02 from the client namespace to the floating IP; packets lost when stopped."""

    def __init__(self, namespace: str, address: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", namespace, "ping", "-n", "-q",
                                      "-i", str(PING_INTERVAL), address],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> tuple[int, int]:
        """(sent, lost)."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        if not m:
            raise RuntimeError(f"ping said: {out}")
        sent, received = int(m.group(1)), int(m.group(2))
        return sent, sent - received


def switchovers(sb: BenchSandbox, probe: Probe) -> tuple[list[float], list[int], int]:
    durations, losses, sent_total = [], [], 0
    net = probe.layout.net
    address = net.floating_ip.split("/")[0]
    for i in range(ROUNDS):
        current = probe.primary()
        target = probe.nodes[(probe.nodes.index(current) + 1) % len(probe.nodes)]
        ping = Ping(net.client, address)
        time.sleep(0.5)                      # a baseline of answered pings before
        t0 = time.perf_counter()
        said = sb.pvc("node", "primary", target, "--wait").stdout.strip()
        durations.append(time.perf_counter() - t0)
        if not (probe.serving(target) and probe.leader() == target):
            raise RuntimeError(f"switchover {i + 1} to {target} did not move everything: "
                               f"{said}")
        time.sleep(0.5)                      # and after
        sent, lost = ping.stop()
        sent_total += sent
        losses.append(lost)
    return durations, losses, sent_total


def election(sb: BenchSandbox, probe: Probe, sig: int) -> tuple[float, float]:
    """Seconds from the fault until a primary serves, and until the database leads there.
    Killed: the supervisor restarts the daemon, which lets its dead predecessor's role go at
    once; hung: the role is free when its session expires."""
    from pvc.sandbox.supervisor import Supervisor
    sup = Supervisor(Path(BENCH_SANDBOX_DIR))
    old = probe.primary()
    alive = probe.cluster.schema.node_alive(old)
    old_session = probe.cluster.store.get_text(alive)
    pid = int(sup.info(f"node-{old}")["pid"])
    t0 = time.perf_counter()
    if sig == signal.SIGKILL:
        os.killpg(os.getpgid(pid), sig)
    else:
        os.kill(pid, sig)

    def serving() -> bool:
        p = probe.primary()
        if sig == signal.SIGKILL:   # the dead process's role does not count
            if probe.cluster.store.get_text(alive) in (None, old_session):
                return False
        elif p == old:
            return False
        return bool(p) and probe.serving(p)
    try:
        _until(serving)
        elected = time.perf_counter() - t0
        new = probe.primary()
        _until(lambda: probe.leader() == new)
        followed = time.perf_counter() - t0
    finally:
        if sig == signal.SIGSTOP:
            os.kill(pid, signal.SIGCONT)
    _until(lambda: probe.primary() != "" and probe.leader() == probe.primary()
           and sum(probe.ip_on(n) for n in probe.nodes) == 1)
    return elected, followed


def main() -> None:
    with BenchSandbox("test", nodes=3, vms=3, database=True) as sb:
        probe = Probe(sb)
        try:
            durations, losses, sent = switchovers(sb, probe)
            killed = [election(sb, probe, signal.SIGKILL) for _ in range(3)]
            hung = [election(sb, probe, signal.SIGSTOP) for _ in range(3)]
        finally:
            probe.close()
    record("coordinator switchover (pvc node primary NODE --wait)", {
        "end to end (IP, database leader, services moved)": summary_ms(durations),
        "pings to the floating IP every 20 ms: lost per switchover": losses,
        "pings sent": sent,
    }, "0 packets lost and < 5 s (upstream: 1-2 lost at 25 ms, 5-10 s)")
    record("primary election after the primary's daemon dies", {
        "killed (restarted by the supervisor): a primary serves again":
            summary_ms([e for e, _ in killed]),
        "killed: the database leader is on it": summary_ms([f for _, f in killed]),
        "hung (session expires, 4 s): another primary serves": summary_ms([e for e, _ in hung]),
        "hung: the database leader followed": summary_ms([f for _, f in hung]),
    })


if __name__ == "__main__":
    main()
