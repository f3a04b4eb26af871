"""Node daemon start → every local VM reconciled, on the `test` hypervisor.

The seed's figure: 0.976 s for 82 VMs (down from 17 s). Targets: < 0.25 s for 82, < 1 s for
1000. Two cases per size: cold (nothing runs yet: the daemon starts every VM) and warm (the
daemon restarts while its VMs run: the seed's case).
"""
from __future__ import annotations

import time

from bench.common import BenchServices, record
from pvc.vm import definition


def xml(name: str) -> str:
    return (f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>1</memory>"
            "<vcpu>1</vcpu><os><type>hvm</type></os></domain>")


def measure(svc: BenchServices, uri: str, count: int) -> dict[str, float]:
    from pvc.core.cluster import Cluster
    from pvc.hypervisor.adapter import LibvirtHypervisor, undefine_all
    from pvc.node.daemon import NodeDaemon

    cfg = svc.config(f"/bench-reconcile-{count}-{int(time.time())}", "hv1", uri)
    cluster = Cluster.connect(cfg)
    for i in range(count):
        definition.define(cluster, xml(f"vm{i}"), node="hv1", initial_state="start",
                          allow_unknown_nodes=True)
    hold = LibvirtHypervisor(uri).connect()   # the test driver keeps state while a client is connected
    figures = {}
    for case in ("cold", "warm"):
        t0 = time.perf_counter()
        daemon = NodeDaemon(cfg)
        daemon.start()
        total = time.perf_counter() - t0
        result = daemon.last_reconcile
        assert result is not None and len(hold.running()) == count
        assert len(result.started) == (count if case == "cold" else 0)
        figures[f"{case}: reconcile s"] = round(result.seconds, 3)
        figures[f"{case}: daemon start total s"] = round(total, 3)
        daemon.shutdown()
    undefine_all(uri)
    hold.close()
    cluster.store.delete(cfg.cluster.zookeeper.root, recursive=True)
    cluster.close()
    return figures


def main() -> None:
    with BenchServices() as svc:
        uri = svc.libvirtd("hv1")
        for count in (82, 1000):
            record(f"reconcile: node daemon start with {count} VMs (test hypervisor)",
                   measure(svc, uri, count),
                   target="< 0.25 s for 82 VMs, < 1 s for 1000 (seed: 0.976 s for 82)")


if __name__ == "__main__":
    main()
