"""Recovery: how long after a fault ends is the cluster fully operational again?

  * ZooKeeper silent longer than the session (every session expires), then back: time until
    every node's daemon runs and its workers are registered again, and until an operation
    submitted right away has finished.
  * Redis restarted: time from the restart until an operation submitted right after it has
    finished.
  * the broker's master killed for good (as with its node's power): time until the
    Sentinels name a new master, and until an operation submitted just before the kill, and
    one submitted at the kill (retried while the CLI would say "cannot reach Redis"), have
    finished; how many submissions failed meanwhile.

Measured on a test-driver sandbox (3 nodes), from this process's own clients. Target: fully
operational within 2 s of ZooKeeper returning.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_OFFSET, BENCH_SANDBOX_DIR, BenchSandbox, record, summary_ms

ROUNDS = 3
SESSION = 4.0


def _client(sb: BenchSandbox) -> Any:
    from pvc.core.cluster import Cluster
    return Cluster.connect(sb.config())


def _operational(c: Any, workers: dict[str, int]) -> bool:
    nodes = c.nodes()
    return (all(n.daemon_state == "run" for n in nodes)
            and {n.name: n.workers for n in nodes} == workers)


def _submit_restart(sb: BenchSandbox, c: Any, vm: str) -> tuple[Any, int]:
    """Request and send a restart of vm, again while a worker starts or the broker is not
    back (each failed send abandoned, as the CLI does); the request and the failed sends."""
    from pvc.core.errors import Unavailable
    from pvc.operations.requests import abandon
    from pvc.vm import lifecycle
    from tasks.client import submit
    failed = 0
    while True:
        try:
            req = lifecycle.request(c, vm, "restart")
        except Unavailable:      # its node's worker starting again: not yet
            time.sleep(0.1)
            continue
        try:
            submit(sb.config(), req.op)
            return req, failed
        except Unavailable:
            failed += 1
            abandon(c, req.op, "not submitted: the broker is not back yet")


def _operation_through(sb: BenchSandbox, c: Any, vm: str) -> None:
    """Submit a restart of vm (retrying while the broker is not back) and wait for it."""
    req, _failed = _submit_restart(sb, c, vm)
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
        failovers = [master_killed(sb, c) for _ in range(ROUNDS)]
        c.close()
    record("recovery after ZooKeeper session expiry", {
        "every node running with its workers registered": summary_ms(registered),
        "first operation finished": summary_ms(through),
    }, "fully operational within 2 s of ZooKeeper returning")
    record("recovery after a Redis restart", {
        "restart → first operation finished": summary_ms(redis_through),
    })
    record("the broker's master killed (Sentinel failover), seconds from the kill", {
        "the Sentinels name a new master": [round(f["promoted"], 2) for f in failovers],
        "a submission at the kill accepted (retried inside pvc)":
            [round(f["submitted"], 2) for f in failovers],
        "submissions that failed meanwhile (exit 4, nothing changed)":
            [f["failed"] for f in failovers],
        "operation submitted just before the kill: finished":
            [round(f["before"], 2) for f in failovers],
        "operation submitted at the kill: finished": [round(f["at"], 2) for f in failovers],
        "of these, sent again by the primary's sweep (its message lost)":
            [int(f["before resent"] + f["at resent"]) for f in failovers],
    }, "nothing lost: the message is replicated, or the sweep sends it again")


def _redis_master_program(sb: Any) -> str:
    """The supervised program of the broker's current master."""
    from pvc.sandbox import roles
    from pvc.sandbox.sandbox import Layout
    return f"redis-{roles.redis_master_node(Layout(Path(BENCH_SANDBOX_DIR), int(BENCH_OFFSET)))}"


def master_killed(sb: BenchSandbox, c: Any) -> dict[str, float]:
    """One failover: the master frozen, left stopped, killed (no clean shutdown)."""
    from pvc.core import redis_client
    from pvc.sandbox.supervisor import Supervisor
    sup = Supervisor(Path(BENCH_SANDBOX_DIR))
    master = _redis_master_program(sb)
    old = redis_client.status(sb.config())["master"]
    before, _failed = _submit_restart(sb, c, "demo3")
    pid = int(sup.info(master)["pid"])
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGSTOP)
    sup.stop_program(master, wait=False)
    os.kill(pid, signal.SIGKILL)
    at, failed = _submit_restart(sb, c, "demo4")
    submitted = time.perf_counter() - t0
    while redis_client.status(sb.config())["master"] in ("", old):
        time.sleep(0.05)   # sampling the Sentinels from outside
    promoted = time.perf_counter() - t0
    done: dict[str, float] = {}
    for name, req in (("before", before), ("at", at)):
        record = c.store.wait_for(c.schema.operation(req.op.id),
                                  lambda r: r["state"] == "succeeded", 120)
        done[name] = time.perf_counter() - t0
        done[f"{name} resent"] = record.get("resends", 0)   # by the primary's sweep
    sup.start_program(master)
    while any(r["state"] != "up" for r in redis_client.status(sb.config())["replicas"]) or \
            len(redis_client.status(sb.config())["replicas"]) < 2:
        time.sleep(0.1)   # the old master back as a replica before the next round
    return {"promoted": promoted, "submitted": submitted, "failed": failed, **done}


if __name__ == "__main__":
    main()
