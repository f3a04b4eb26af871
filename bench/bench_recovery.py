"""Recovery: how long after a fault ends is the cluster fully operational again?

  * ZooKeeper silent longer than the session (every session expires), then back: time until
    every node's daemon runs and its workers are registered again, and until an operation
    submitted right away has finished.
  * Redis restarted: time from the restart until an operation submitted right after it has
    finished.

Measured on a test-driver sandbox (3 nodes), from this process's own clients. Target: fully
operational within 2 s of ZooKeeper returning.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_SANDBOX_DIR, BenchSandbox, record, summary_ms

ROUNDS = 3
SESSION = 4.0


def _client(sb: BenchSandbox) -> Any:
    from pvc.core.cluster import Cluster
    return Cluster.connect(sb.config())


def _operational(c: Any, workers: dict[str, int]) -> bool:
    nodes = c.nodes()
    return (all(n.daemon_state == "run" for n in nodes)
            and {n.name: n.workers for n in nodes} == workers)


def _operation_through(sb: BenchSandbox, c: Any, vm: str) -> None:
    """Submit a restart of vm (retrying while the broker is not back) and wait for it."""
    from pvc.core.errors import Unavailable
    from pvc.operations.requests import abandon
    from pvc.vm import lifecycle
    from tasks.client import submit
    while True:
        req = lifecycle.request(c, vm, "restart")
        try:
            submit(sb.config(), req.op)
            break
        except Unavailable:
            abandon(c, req.op, "not submitted: broker not back yet")
    c.store.wait_for(c.schema.operation(req.op.id),
                     lambda r: r["state"] == "succeeded", 60)


def main() -> None:
    from pvc.sandbox.supervisor import Supervisor
    with BenchSandbox("test", nodes=3, vms=6) as sb:
        sup = Supervisor(Path(BENCH_SANDBOX_DIR))
        c = _client(sb)
        workers = {n.name: n.workers for n in c.nodes()}
        c.close()
        registered, through = [], []
        for _ in range(ROUNDS):
            members = [int(p["pid"]) for name, p in sup.programs().items()
                       if name.startswith("zookeeper-")]
            for zk in members:
                os.kill(zk, signal.SIGSTOP)
            time.sleep(SESSION + 3)   # the fault: the ensemble silent longer than every session
            for zk in members:
                os.kill(zk, signal.SIGCONT)
            back = time.perf_counter()
            c = _client(sb)
            while not _operational(c, workers):
                time.sleep(0.02)      # sampling the cluster's state from outside
            registered.append(time.perf_counter() - back)
            _operation_through(sb, c, "demo1")
            through.append(time.perf_counter() - back)
            c.close()
        redis_through = []
        c = _client(sb)
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            master = _redis_master_program(sb)
            sup.stop_program(master)
            sup.start_program(master)
            _operation_through(sb, c, "demo2")
            redis_through.append(time.perf_counter() - t0)
        c.close()
    record("recovery after ZooKeeper session expiry", {
        "every node running with its workers registered": summary_ms(registered),
        "first operation finished": summary_ms(through),
    }, "fully operational within 2 s of ZooKeeper returning")
    record("recovery after a Redis restart", {
        "restart → first operation finished": summary_ms(redis_through),
    })


def _redis_master_program(sb: Any) -> str:
    """The supervised program of the broker's current master (a Redis on each coordinator,
    listed in the coordinators' order, as their Sentinels are)."""
    from pvc.core import redis_client
    cfg = sb.config()
    master = redis_client.status(cfg)["master"].rsplit(":", 1)[0]
    hosts = [s.rsplit(":", 1)[0] for s in cfg.cluster.redis.sentinels.split(",")]
    return f"redis-{cfg.cluster.coordinators[hosts.index(master)]}"


if __name__ == "__main__":
    main()
