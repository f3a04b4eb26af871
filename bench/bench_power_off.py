"""A coordinator's power cut: the coordinator that is at once the primary, the database leader,
the ZooKeeper leader and the broker's master loses its power (its BMC, as a real power cut; the
sandbox's power off kills every process of the node and takes its link and addresses down).
From the cut, as a client sees it:

  * ZooKeeper serving: a write through a new session succeeds (the ensemble elected anew);
  * the broker's new master, as the Sentinels name it;
  * a new primary: another coordinator holds the role and the floating IP;
  * the database leader on it;
  * the first operation done: a `vm restart` of a VM on another node, submitted at the cut;
  * every VM of the dead node running elsewhere (after the fence).

Measured on a test-driver sandbox (3 nodes, the database on, fencing as the sandbox has it).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from bench.bench_coordinators import POLL, Probe
from bench.common import BenchSandbox, record

ROUNDS = 2


def _zookeeper_writes(sb: BenchSandbox) -> bool:
    from pvc.core.cluster import Cluster
    try:
        c = Cluster.connect(sb.config())
    except Exception:
        return False
    try:
        c.store.put(c.schema.root + "/bench-probe", str(time.time()))
        return True
    except Exception:
        return False
    finally:
        c.close()


def all_in_one(sb: BenchSandbox, probe: Probe) -> str:
    """Make the ZooKeeper leader the primary (so the database leader) and the broker's
    master too."""
    from pvc.sandbox import roles
    leader = roles.zookeeper_leader(probe.layout)
    assert leader, "no ZooKeeper leader"
    if probe.primary() != leader:
        sb.pvc("node", "primary", leader, "--wait")
    roles.make_redis_master(probe.layout, leader)
    assert probe.primary() == leader and roles.redis_master_node(probe.layout) == leader
    return leader


def _watch(found: dict[str, float], name: str, condition: Callable[[], Any], t0: float,
           deadline: float) -> threading.Thread:
    """Poll one figure's condition in a thread of its own (a call that blocks on the dead
    node delays only its own figure) and note when it first holds."""
    def run() -> None:
        while time.perf_counter() < deadline:
            try:
                if condition():
                    found[name] = time.perf_counter() - t0
                    return
            except Exception:
                pass   # a server between two masters: not yet
            time.sleep(POLL)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def one_cut(sb: BenchSandbox, probe: Probe) -> dict[str, float]:
    from pvc.coordinator.database import patroni_for
    from pvc.core.cluster import Cluster
    from pvc.node.fencing import bmc_address
    from pvc.node.ipmi import IpmiBmc
    from pvc.sandbox import roles
    old = all_in_one(sb, probe)
    nodes = {n.name: n for n in probe.cluster.nodes()}
    mine = [v.name for v in probe.cluster.vms() if v.node == old]
    elsewhere = next(v.name for v in probe.cluster.vms() if v.node != old)
    address = bmc_address(probe.cluster, nodes[old])
    assert address is not None
    watcher = Cluster.connect(sb.config())
    patroni = patroni_for(watcher.config, watcher.nodes())
    assert patroni is not None

    def primary() -> str:
        return watcher.store.get_text(watcher.schema.primary) or ""

    def new_primary() -> bool:
        p = primary()
        return bool(p) and p != old and probe.ip_on(p)

    def leader_follows() -> bool:
        p = primary()
        return bool(p) and p != old and patroni.cluster().leader == p

    def operation_done() -> bool:   # submitted again while the CLI says a server is down
        return sb.pvc("vm", "restart", elsewhere, "--wait", check=False).returncode == 0

    def vms_elsewhere() -> bool:
        running = {d.get("name"): n.name for n in watcher.nodes() if n.name != old
                   for d in n.domains.values()}
        return all(vm in running for vm in mine)

    found: dict[str, float] = {}
    t0 = time.perf_counter()
    IpmiBmc(address).power_off()
    deadline = t0 + 180
    threads = [_watch(found, name, condition, t0, deadline) for name, condition in (
        ("zookeeper serving", lambda: _zookeeper_writes(sb)),
        ("broker's new master", lambda: roles.redis_master_node(probe.layout) not in ("", old)),
        ("new primary with the floating IP", new_primary),
        ("database leader on the new primary", leader_follows),
        ("first operation done", operation_done),
        ("every VM of the dead node running elsewhere", vms_elsewhere))]
    for thread in threads:
        thread.join()
    watcher.close()
    IpmiBmc(address).power_on()
    _back(sb, old)
    return found


def _pvc(sb: BenchSandbox) -> list[str]:
    import sys
    from pathlib import Path
    return [str(Path(sys.executable).with_name("pvc"))]


def _back(sb: BenchSandbox, node: str) -> None:
    t0 = time.perf_counter()
    while sb.pvc("node", "unflush", node, "--wait", check=False).returncode != 0:
        if time.perf_counter() - t0 > 180:
            raise RuntimeError(f"{node} did not come back")
        time.sleep(1)   # its daemon and worker are starting


def main() -> None:
    with BenchSandbox("test", nodes=3, vms=9, database=True) as sb:
        probe = Probe(sb)
        rounds: list[dict[str, float]] = []
        for _ in range(ROUNDS):
            rounds.append(one_cut(sb, probe))
            time.sleep(5)   # the cluster settles before the next cut
        probe.close()
    keys: list[str] = sorted({k for r in rounds for k in r})
    figures: dict[str, Any] = {k: [round(r[k], 2) for r in rounds if k in r] for k in keys}
    record("a coordinator's power cut (primary, database leader, ZooKeeper leader and broker "
           "master), seconds from the cut",
           figures, "the control plane survives: a new primary and leader, operations go on")


if __name__ == "__main__":
    main()
