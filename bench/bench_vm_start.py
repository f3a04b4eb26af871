"""`pvc vm start` → the VM's running state visible in ZooKeeper.

Measured two ways on a 3-node `test` sandbox:
  * the operation path the CLI uses, in one process (request + submit to the node's queue →
    the node's published domains show it running, seen through a watch), median over 100;
  * the whole `pvc vm start VM --wait` command as a new process (Python start-up included).
Target: < 50 ms median for the first.
"""
from __future__ import annotations

import time

from bench.common import BenchSandbox, record, summary_ms


def main() -> None:
    from pvc.core.cluster import Cluster
    from pvc.vm import lifecycle
    from tasks.client import submit

    with BenchSandbox("test", nodes=3, vms=3) as sb:
        cfg = sb.config()
        cluster = Cluster.connect(cfg)
        vm = cluster.vm("demo1").value
        domains = cluster.schema.node_field(vm.node, "domains")
        samples = []
        for _ in range(100):
            sb.pvc("vm", "stop", "demo1", "--wait")
            t0 = time.perf_counter()
            req = lifecycle.request(cluster, "demo1", "start")
            submit(cfg, req.op)
            cluster.store.wait_for(domains, lambda v: vm.uuid in (v or {}), timeout=30)
            samples.append(time.perf_counter() - t0)
            cluster.store.wait_for(cluster.schema.operation(req.op.id),
                                   lambda v: v["state"] == "succeeded", timeout=30)
        cli = []
        for _ in range(10):
            sb.pvc("vm", "stop", "demo2", "--wait")
            t0 = time.perf_counter()
            sb.pvc("vm", "start", "demo2", "--wait")
            cli.append(time.perf_counter() - t0)
        cluster.close()
    figures = {f"operation path: {k}": v for k, v in summary_ms(samples).items()}
    figures.update({f"whole `pvc vm start --wait` process: {k}": v
                    for k, v in summary_ms(cli).items()})
    record("vm start: request → running visible in ZooKeeper (test sandbox)", figures,
           target="< 50 ms median")


if __name__ == "__main__":
    main()
