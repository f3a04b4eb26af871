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

import subprocess
import time
from typing import Any

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
    leader = roles.zookeeper_leader(probe.layout, probe.nodes)
    assert leader, "no ZooKeeper leader"
    if probe.primary() != leader:
        sb.pvc("node", "primary", leader, "--wait")
    roles.make_redis_master(probe.layout, probe.nodes, leader)
    return leader


def one_cut(sb: BenchSandbox, probe: Probe) -> dict[str, float]:
    from pvc.node.fencing import bmc_address
    from pvc.node.ipmi import IpmiBmc
    from pvc.sandbox import roles
    old = all_in_one(sb, probe)
    nodes = {n.name: n for n in probe.cluster.nodes()}
    mine = [v.name for v in probe.cluster.vms() if v.node == old]
    elsewhere = next(v.name for v in probe.cluster.vms() if v.node != old)
    address = bmc_address(probe.cluster, nodes[old])
    assert address is not None
    t0 = time.perf_counter()
    IpmiBmc(address).power_off()
    restart = subprocess.Popen([*_pvc(sb), "vm", "restart", elsewhere, "--wait"],
                               env=sb.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    found: dict[str, float] = {}
    deadline = t0 + 180
    while len(found) < 6 and time.perf_counter() < deadline:
        now = time.perf_counter() - t0
        if "zookeeper serving" not in found and _zookeeper_writes(sb):
            found["zookeeper serving"] = now
        if "broker's new master" not in found and \
                roles.redis_master_node(probe.layout, probe.nodes) not in ("", old):
            found["broker's new master"] = now
        if "new primary with the floating IP" not in found:
            p = probe.primary()
            if p and p != old and probe.ip_on(p):
                found["new primary with the floating IP"] = now
        if "database leader on the new primary" not in found and \
                "new primary with the floating IP" in found and \
                probe.leader() == probe.primary():
            found["database leader on the new primary"] = now
        if "first operation done" not in found and restart.poll() is not None:
            found["first operation done"] = now
        if "every VM of the dead node running elsewhere" not in found and all(
                _running_elsewhere(probe, vm, old) for vm in mine):
            found["every VM of the dead node running elsewhere"] = now
        time.sleep(POLL)
    IpmiBmc(address).power_on()
    _back(sb, old)
    return found


def _running_elsewhere(probe: Probe, vm: str, old: str) -> bool:
    where = [n.name for n in probe.cluster.nodes() if vm in
             {d.get("name") for d in n.domains.values()}]
    return len(where) == 1 and where[0] != old


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
