"""The cluster's figures as Prometheus metric families, from one collection (pvc.observe.
exporter gathers it on the primary). Pure: every family is built from plain data, so each is
unit-tested without a server. The only user of prometheus_client.

The DEGRADED reasons are those of `pvc cluster status` (pvc.observe.status.gather): one
function computes them for both.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from math import inf
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pvc.core import counters
from pvc.node.vmstats import FIGURES
from pvc.observe.status import Status

# VM statistics (pvc.node.vmstats keys) -> metric name, help, counter or gauge
VM_METRICS = {
    "cpu": ("pvc_vm_cpu_seconds_total", "CPU time the VM used", "counter"),
    "mem": ("pvc_vm_memory_bytes", "memory the VM's guest uses", "gauge"),
    "rd": ("pvc_vm_block_read_bytes_total", "bytes the VM read from its disks", "counter"),
    "wr": ("pvc_vm_block_write_bytes_total", "bytes the VM wrote to its disks", "counter"),
    "rx": ("pvc_vm_network_receive_bytes_total", "bytes the VM received", "counter"),
    "tx": ("pvc_vm_network_transmit_bytes_total", "bytes the VM sent", "counter"),
}
assert set(VM_METRICS) == {f.key for f in FIGURES}

COUNTER_METRICS = {   # pvc.observe.counters families -> metric name
    "operation_seconds": "pvc_operation_duration_seconds",
    "flush_lock_wait_seconds": "pvc_flush_lock_wait_seconds",
    "fences": "pvc_fences",
    "elections": "pvc_elections",
    "switchovers": "pvc_switchovers",
}
assert set(COUNTER_METRICS) == set(counters.FAMILIES)


ZK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Exposition:
    """What the endpoint serves: the families of the last collection, as they are, and pvc's
    own figures of its collections (their cost, their age, ZooKeeper's round trips)."""
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.families: list[Metric] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)   # type: ignore[arg-type]   # collect() below
        self.zk_latency = Histogram(
            "pvc_zookeeper_request_seconds", "round trips to ZooKeeper as pvc's primary sees "
            "them", buckets=ZK_BUCKETS, registry=self.registry)
        self.collect_seconds = Gauge("pvc_collect_seconds", "how long the last collection "
                                     "of the cluster's figures took", registry=self.registry)
        self.collected_at = Gauge("pvc_collected_timestamp_seconds", "when the figures "
                                  "served were collected", registry=self.registry)

    def collect(self) -> list[Metric]:
        return list(self.families)

    def collected(self, families: list[Metric], seconds: float, at: float) -> None:
        self.families = families
        self.collect_seconds.set(seconds)
        self.collected_at.set(at)

    def down(self) -> None:
        """A collection failed: pvc_up 0 alone, not figures that went stale."""
        self.families = [gauge("pvc_up", "1: pvc's endpoint read the cluster's state", [],
                               [([], 0)])]

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Collection:
    """Everything one collection read."""
    status: Status
    counters: dict[str, dict[str, Any]]
    vm_stats: dict[str, dict[str, Any]]      # node -> its /nodes/N/vm_stats
    tailers: dict[str, dict[str, Any]]       # node -> its /nodes/N/tailer
    queues: dict[str, int]                   # node queue -> waiting messages
    dns: dict[str, float] = field(default_factory=dict)   # writes, last_success (primary's)


def families(c: Collection) -> list[Metric]:
    s = c.status
    return [*_health(s), *_nodes(s), *_vms(s), *_operations(s), *_flush_lock(s),
            *_stored(c.counters), *_database(s), *_zookeeper(s), *_broker(c.queues),
            *_dns(c.dns), *_console(c.tailers), *_vm_stats(s, c.vm_stats)]


def gauge(name: str, doc: str, labels: list[str],
           samples: Iterable[tuple[list[str], float]]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        g.add_metric(values, value)
    return g


def _health(s: Status) -> list[Metric]:
    return [
        gauge("pvc_up", "1: pvc's endpoint read the cluster's state", [], [([], 1)]),
        gauge("pvc_healthy", "1: the cluster is healthy (pvc cluster status)", [],
               [([], 0 if s.reasons else 1)]),
        gauge("pvc_degraded", "1 for each reason the cluster is DEGRADED", ["reason"],
               [([r], 1) for r in s.reasons]),
    ]


def _nodes(s: Status) -> list[Metric]:
    by_state = Counter((n.daemon_state, n.domain_state, n.coordinator_state) for n in s.nodes)
    memory = [([n.name, kind], value * 1024 * 1024) for n in s.nodes
              for kind, value in (("total", n.mem_total), ("free", n.mem_free),
                                  ("allocated", n.mem_allocated),
                                  ("provisioned", n.mem_provisioned))]
    return [
        gauge("pvc_nodes", "nodes by daemon, domain and coordinator state",
               ["daemon_state", "domain_state", "coordinator_state"],
               [([str(d), str(o), str(c)], k) for (d, o, c), k in sorted(by_state.items())]),
        gauge("pvc_node_memory_bytes", "a node's memory: total, free, allocated (running "
               "VMs), provisioned (VMs assigned)", ["node", "kind"], memory),
        gauge("pvc_node_vms", "domains running on a node", ["node"],
               [([n.name], n.vms) for n in s.nodes]),
        gauge("pvc_primary", "1 on the primary coordinator", ["node"],
               [([s.primary], 1)] if s.primary else []),
    ]


def _vms(s: Status) -> list[Metric]:
    by = Counter((v.vm.state, v.observed, v.vm.node) for v in s.views)
    return [gauge("pvc_vms", "VMs by desired state, observed state and assigned node",
                   ["state", "observed", "node"],
                   [([st, ob, node], k) for (st, ob, node), k in sorted(by.items())])]


def _operations(s: Status) -> list[Metric]:
    by = Counter((o.kind, o.state) for o in s.operations)
    return [gauge("pvc_operations", "operation records kept, by kind and state",
                   ["kind", "state"], [([k, st], n) for (k, st), n in sorted(by.items())])]


def _flush_lock(s: Status) -> list[Metric]:
    return [gauge("pvc_flush_lock_held", "1 while a flush or unflush holds the lock", [],
                   [([], 1 if s.lock.holder else 0)]),
            gauge("pvc_flush_lock_waiting", "flushes and unflushes waiting for the lock", [],
                   [([], len(s.lock.queue))])]


def _stored(stored: dict[str, dict[str, Any]]) -> list[Metric]:
    """The cumulative families kept in ZooKeeper (pvc.observe.counters)."""
    out: list[Metric] = []
    for family, (kind, doc, labels) in counters.FAMILIES.items():
        name, data = COUNTER_METRICS[family], stored.get(family, {})
        if kind == "counter":
            c = CounterMetricFamily(name, doc, labels=list(labels))
            for values, value in counters.series(data):
                c.add_metric([values[k] for k in labels], value)
            out.append(c)
            continue
        h = HistogramMetricFamily(name, doc, labels=list(labels))
        bounds = [*data.get("buckets", counters.DURATION_BUCKETS), inf]
        for values, figures in counters.series(data):
            cumulative, total = [], 0
            for bound, n in zip(bounds, figures["counts"]):
                total += n
                cumulative.append((_le(bound), total))
            h.add_metric([values[k] for k in labels], cumulative, figures["sum"])
        out.append(h)
    return out


def _le(bound: float) -> str:
    return "+Inf" if bound == inf else repr(float(bound))


def _database(s: Status) -> list[Metric]:
    members = s.database.get("members", [])
    return [
        gauge("pvc_database_leader", "1 on the node whose PostgreSQL leads (Patroni)",
               ["node"], [([s.database["leader"]], 1)] if s.database.get("leader") else []),
        gauge("pvc_database_replica_lag_bytes", "how far a replica is behind the leader",
               ["node"], [([m["name"]], m["lag"]) for m in members
                          if m.get("lag") is not None and m.get("role") != "leader"]),
        gauge("pvc_database_member_up", "1: the member runs or streams", ["node", "state"],
               [([m["name"], m["state"]], 1 if m["state"] in ("running", "streaming") else 0)
                for m in members]),
    ]


def _zookeeper(s: Status) -> list[Metric]:
    return [gauge("pvc_zookeeper_member_up", "1: the ensemble member serves (leader or "
                   "follower)", ["member", "mode"],
                   [([m, mode], 1 if mode in ("leader", "follower", "standalone") else 0)
                    for m, mode in sorted(s.zookeeper_members.items())])]


def _broker(queues: dict[str, int]) -> list[Metric]:
    return [gauge("pvc_broker_queue_messages", "messages waiting in a node's queue",
                   ["queue"], [([q], n) for q, n in sorted(queues.items())])]


def _dns(dns: dict[str, float]) -> list[Metric]:
    if not dns:
        return []
    writes = CounterMetricFamily("pvc_dns_zone_writes", "zones the DNS aggregator wrote "
                                 "(since this primary took over)")
    writes.add_metric([], dns["writes"])
    return [writes, gauge("pvc_dns_last_success_timestamp_seconds", "when the DNS "
                           "aggregator's last pass went through", [],
                           [([], dns["last_success"])])]


def _console(tailers: dict[str, dict[str, Any]]) -> list[Metric]:
    m = CounterMetricFamily("pvc_console_bytes_written", "bytes a node's console tailer "
                            "wrote to ZooKeeper", labels=["node"])
    for node, figures in sorted(tailers.items()):
        m.add_metric([node], figures.get("bytes_written", 0))
    return [m]


def _vm_stats(s: Status, by_node: dict[str, dict[str, Any]]) -> list[Metric]:
    names = {v.vm.uuid: v.vm.name for v in s.views}
    out: list[Metric] = []
    for key, (name, doc, kind) in VM_METRICS.items():
        cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        m = cls(name, doc, labels=["vm", "node"])   # a counter family adds _total itself
        for node, record in sorted(by_node.items()):
            for uuid, figures in sorted(record.get("vms", {}).items()):
                if key in figures and uuid in names:
                    m.add_metric([names[uuid], node], figures[key])
        out.append(m)
    return out
