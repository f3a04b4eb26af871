"""The cluster's status in one place: what `pvc cluster status` shows and what the metrics
export, gathered by one function, so both give the same DEGRADED reasons."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pvc.coordinator.database import database_status
from pvc.core import redis_client
from pvc.core.cluster import Cluster
from pvc.core.models import Node, Operation, VmView
from pvc.core.states import NOOUT_STATES
from pvc.core.zookeeper import member_modes
from pvc.network import managed
from pvc.node.flushlock import LockStatus, lock_status
from pvc.storage import manage


@dataclass
class Status:
    name: str
    primary: str
    nodes: list[Node]
    views: list[VmView]
    operations: list[Operation]
    lock: LockStatus
    database: dict[str, Any]
    broker: dict[str, Any]
    storage: dict[str, Any]
    zookeeper_members: dict[str, str]
    extra: dict[str, Any]            # shown as they are: dns, shutdown, maintenance, cordoned
    reasons: list[str]               # why the cluster is degraded ([] when healthy)

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def report(self, c: Cluster) -> dict[str, Any]:
        """The JSON of `cluster status --format json`."""
        views, nodes, ops = self.views, self.nodes, self.operations
        return {
            "name": self.name,
            "zookeeper": c.config.cluster.zookeeper.hosts,
            "zookeeper_members": self.zookeeper_members,
            "primary": self.primary,
            "floating_ip": c.config.cluster.floating_ip,
            "database": self.database,
            "broker": self.broker,
            "storage": self.storage,
            "nodes": {"total": len(nodes),
                      "daemon_state": dict(Counter(n.daemon_state for n in nodes)),
                      "domain_state": dict(Counter(n.domain_state for n in nodes))},
            "vms": {"total": len(views),
                    "state": dict(Counter(v.vm.state for v in views)),
                    "observed": dict(Counter(v.observed for v in views))},
            "operations": {"total": len(ops), "state": dict(Counter(o.state for o in ops))},
            "flush_lock": {"holder": self.lock.holder, "queue": self.lock.queue},
            **self.extra,
            "healthy": self.healthy,
            "reasons": self.reasons,
        }


def gather(c: Cluster) -> Status:
    """Everything `cluster status` shows, and every reason the cluster is degraded: pvc's own
    (pvc.core.health), then the database's, the broker's, storage's and ZooKeeper's."""
    reasons, snap = c.health()
    nodes, ops = snap["nodes"], snap["operations"]
    primary = c.store.get_text(c.schema.primary) or ""
    database = database_status(c.config, nodes, primary)
    reasons += database.pop("problems", [])
    broker = redis_client.status(c.config)
    reasons += broker.pop("problems", [])
    storage = manage.report(c.config.cluster.storage,
                            {n.name for n in nodes if n.domain_state in NOOUT_STATES})
    reasons += storage.pop("problems", [])
    members = member_modes(c.config.cluster.zookeeper.hosts)   # leader, follower, down…
    reasons += [f"zookeeper: member {m} is {mode}" for m, mode in members.items()
                if len(members) > 1 and mode not in ("leader", "follower")]
    extra = {"dns": _dns(c, primary), "shutdown": c.cluster_shutdown(),
             "maintenance": c.maintenance(),
             "cordoned": {n.name: n.cordon for n in nodes if n.cordon},
             "metrics": _metrics(c)}
    return Status(c.config.cluster.name, primary, nodes, c.views(snap["vms"], nodes), ops,
                  lock_status(c), database, broker, storage, members, extra, reasons)


def _metrics(c: Cluster) -> str:
    """Where the primary serves the metrics ("" when it does not)."""
    metrics = c.config.cluster.metrics
    if not metrics.enabled:
        return ""
    return f"http://{c.config.metrics_address()}:{metrics.port}/metrics"


def _dns(c: Cluster, primary: str) -> dict[str, Any]:
    """Where the managed networks' names are served, and who publishes them."""
    dns = c.config.cluster.dns
    if not dns.enabled:
        return {}
    return {"address": c.config.cluster.floating_ip.split("/")[0], "port": dns.port,
            "zones": [n.domain for n in managed.all_networks(c)], "aggregator": primary}
