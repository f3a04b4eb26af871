"""What observability costs, against a real ZooKeeper:

- a scrape of the primary's metrics endpoint at 1000 VMs (3 nodes, every VM with
  statistics): the HTTP round trip with the bearer token, rendering the last collection;
  and the collection itself (the primary's background read, every `metrics.interval`);
- ZooKeeper bytes per second spent on VM statistics at 100 VMs on one node: the publisher
  run for real (one sample a second) with figures shaped like libvirt's, and at the default
  interval; and at 1000 VMs on one node, where the byte bound decides.
"""
from __future__ import annotations

import threading
import time
import urllib.request
import uuid as uuidlib
from dataclasses import replace
from typing import Any

from bench.common import BenchServices, record, summary_ms
from pvc.core.cluster import Cluster
from pvc.core.config import MetricsConfig
from pvc.hypervisor.base import DomainStats
from pvc.node.vmstats import StatsPublisher
from pvc.observe.exporter import MetricsExporter, _server
from pvc.sandbox.services import write_secret

NODES = ("hv1", "hv2", "hv3")
SCRAPE_VMS = 1000
SCRAPES = 50
STATS_VMS = 100
STATS_SECONDS = 12.0


def populate(c: Cluster, count: int) -> None:
    """count running VMs over the nodes, each with statistics, as daemons publish them."""
    vms: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in NODES}
    for i in range(count):
        uuid, node = str(uuidlib.uuid4()), NODES[i % len(NODES)]
        c.store.put(c.schema.vm(uuid), {"uuid": uuid, "name": f"vm{i}", "memory": 512,
                                        "vcpus": 1, "state": "start", "node": node})
        vms[node][uuid] = {"name": f"vm{i}", "state": "running"}
    for node in NODES:
        c.store.put(c.schema.node(node), {"registered": time.time()})
        c.store.put(c.schema.node_field(node, "domains"), vms[node])
        c.store.put(c.schema.node_field(node, "vm_stats"), {
            "at": time.time(), "vms": {u: figures_of(i) for i, u in enumerate(vms[node])}})


def figures_of(i: int) -> dict[str, float]:
    return {"cpu": 12345.678 + i, "cpu%": 3.4, "mem": 512 * 2**20, "rd": 123456789012,
            "rd/s": 40960.0, "wr": 98765432109, "wr/s": 8192.0, "rx": 5555555555,
            "rx/s": 1234.5, "tx": 4444444444, "tx/s": 987.6}


def scrape_figures(bench: BenchServices) -> dict[str, Any]:
    token_file = bench.base / "metrics.token"
    token = write_secret(token_file)
    cfg = bench.config("/bench-metrics")
    cfg = replace(cfg, cluster=replace(cfg.cluster, metrics=MetricsConfig(
        enabled=True, listen="127.0.0.1", token_file=str(token_file))))
    c = Cluster.connect(cfg)
    try:
        populate(c, SCRAPE_VMS)
        exporter = MetricsExporter(c, cfg)
        collections = []
        for _ in range(5):
            t0 = time.perf_counter()
            exporter.collect()
            collections.append(time.perf_counter() - t0)
        server = _server("127.0.0.1", 0, exporter)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.server_address[1]}/metrics",
            headers={"Authorization": f"Bearer {token}"})
        samples, size = [], 0
        for _ in range(SCRAPES):
            t0 = time.perf_counter()
            with urllib.request.urlopen(request, timeout=10) as answer:
                size = len(answer.read())
            samples.append(time.perf_counter() - t0)
        server.shutdown()
        server.server_close()
    finally:
        c.close()
    scrape = summary_ms(samples)
    return {"VMs": SCRAPE_VMS, "scrape median ms": scrape["median_ms"],
            "scrape p95 ms": scrape["p95_ms"], "body KiB": round(size / 1024, 1),
            "collection median ms": summary_ms(collections)["median_ms"]}


def stats_figures(bench: BenchServices) -> dict[str, Any]:
    cfg = bench.config("/bench-stats", node="hv1")
    c = Cluster.connect(cfg)
    started = time.monotonic()
    uuids = [str(uuidlib.uuid4()) for _ in range(STATS_VMS)]

    def sample() -> dict[str, DomainStats]:   # every counter moves, as busy guests' do
        t = time.monotonic() - started
        return {u: DomainStats(cpu_seconds=1000.0 + t * (i % 7), memory_bytes=512 * 2**20,
                               block_read_bytes=int(10**9 + t * 40960 * i),
                               block_write_bytes=int(10**9 + t * 8192 * i),
                               net_rx_bytes=int(10**8 + t * 1000 * i),
                               net_tx_bytes=int(10**8 + t * 900 * i))
                for i, u in enumerate(uuids)}

    defaults = MetricsConfig()
    try:
        c.store.put(c.schema.node("hv1"), {"registered": time.time()})
        publisher = StatsPublisher(sample, lambda r: c.store.put(
            c.schema.node_field("hv1", "vm_stats"), r), interval=1.0, rate=defaults.stats_rate)
        publisher.start()
        time.sleep(STATS_SECONDS)   # the benchmark's measuring window, not a synchronisation
        publisher.stop()
        per_write = publisher.bytes_written / max(1, publisher.writes)
        measured = publisher.bytes_written / STATS_SECONDS
    finally:
        c.close()
    at_default = per_write / max(defaults.stats_interval, per_write / defaults.stats_rate)
    thousand = per_write * 10     # 1000 VMs on one node: ten times the sample
    bounded = thousand / max(defaults.stats_interval, thousand / defaults.stats_rate)
    return {"VMs on the node": STATS_VMS, "bytes per write": round(per_write),
            "B/s at 1 s interval (measured)": round(measured),
            f"B/s at the default {defaults.stats_interval:g} s": round(at_default),
            "B/s at 1000 VMs on a node (bound)": round(bounded),
            "bound B/s (stats_rate)": defaults.stats_rate}


def main() -> None:
    with BenchServices() as bench:
        record("metrics: a scrape of the primary's endpoint at 1000 VMs", scrape_figures(bench),
               target="scrape < 100 ms")
        record("metrics: ZooKeeper bytes/s of VM statistics", stats_figures(bench))


if __name__ == "__main__":
    main()
