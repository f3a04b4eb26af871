"""Observability without servers: counters in the store, metric families from plain data,
the endpoint's authentication, VM statistics' rates and byte bound, node logs, and the
dashboard's queries against what pvc exports."""
from __future__ import annotations

import json
import logging
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pvc.core import counters
from pvc.core.cluster import Cluster
from pvc.core.config import ClusterConfig, Config, MetricsConfig, NodeConfig
from pvc.core.errors import Unavailable
from pvc.core.models import VM, Node, Operation, VmView
from pvc.core.schema import Schema
from pvc.core.states import DaemonState
from pvc.hypervisor.base import DomainStats
from pvc.node.flushlock import LockStatus
from pvc.node.vmstats import StatsPublisher, figures, text
from pvc.observe import metrics, nodelog
from pvc.observe.exporter import MetricsExporter, _server
from pvc.observe.status import Status
from pvc.sandbox import monitoring
from tests.fakes.store import MemoryBackend
from tests.waiting import until

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def memory_cluster(**cluster: Any) -> Cluster:
    cfg = Config(cluster=ClusterConfig(**cluster), node=NodeConfig(name="hv1"))
    c = Cluster(MemoryBackend().session(), Schema("/pvc"), cfg)
    c.ensure_schema()
    return c


def registered(c: Cluster) -> Cluster:
    """hv1 registered (its log lives under its znode)."""
    c.store.put(c.schema.node("hv1"), {"registered": 1.0})
    return c


def status(reasons: list[str] | None = None) -> Status:
    nodes = [Node("hv1", daemon_state=DaemonState.RUN, mem_total=1024, mem_free=512),
             Node("hv2", daemon_state=DaemonState.RUN)]
    vms = [VmView(VM("u1", "web1", 256, 1, state="start", node="hv1"), ["hv1"], "running"),
           VmView(VM("u2", "web2", 256, 1, state="start", node="hv1"), ["hv1"], "running"),
           VmView(VM("u3", "db1", 256, 1, state="stop", node="hv2"), [], "stopped")]
    ops = [Operation("o1", "vm.stop", "db1", "u3", "hv2", "pvc.vm.stop", state="succeeded")]
    return Status("c", "hv1", nodes, vms, ops, LockStatus(None, []),
                  {"leader": "hv1", "members": [{"name": "hv1", "role": "leader",
                                                 "state": "running", "lag": None},
                                                {"name": "hv2", "role": "replica",
                                                 "state": "streaming", "lag": 4096}]},
                  {}, {}, {"10.0.0.1:2181": "leader"}, {}, reasons or [])


def exposition(families: list[Any]) -> dict[str, list[Any]]:
    """The families as Prometheus would parse them: name -> samples."""
    class Fixed:
        def collect(self) -> list[Any]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())   # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def collection(c: Status, **kw: Any) -> metrics.Collection:
    return metrics.Collection(c, kw.get("counters", {}), kw.get("vm_stats", {}),
                              kw.get("tailers", {}), kw.get("queues", {}))


# ---------------------------------------------------------------------- counters

def test_counters_add_up_in_the_store_from_any_session() -> None:
    c = memory_cluster()
    for _ in range(3):
        counters.count(c, "fences", {"result": "asked"})
    counters.count(c, "fences", {"result": "done"})
    for seconds in (0.05, 0.3, 0.3, 1000.0):
        counters.observe(c, "operation_seconds", {"kind": "vm.start", "state": "succeeded"},
                         seconds)
    stored = counters.read_all(c)
    assert dict((labels["result"], v) for labels, v in counters.series(stored["fences"])) \
        == {"asked": 3, "done": 1}
    ((labels, h),) = counters.series(stored["operation_seconds"])
    assert labels == {"kind": "vm.start", "state": "succeeded"}
    assert h["count"] == 4 and h["sum"] == pytest.approx(1000.65)
    assert h["counts"][0] == 1 and h["counts"][-1] == 1    # ≤0.1 s, and beyond 900 s
    assert stored["elections"] == {}


def test_a_counter_with_the_wrong_labels_is_a_bug() -> None:
    with pytest.raises(AssertionError):
        counters.count(memory_cluster(), "fences", {"node": "hv1"})


def test_stored_histograms_export_cumulative_buckets() -> None:
    c = memory_cluster()
    for seconds in (0.05, 0.3, 0.3, 1000.0):
        counters.observe(c, "operation_seconds", {"kind": "vm.start", "state": "succeeded"},
                         seconds)
    found = exposition(metrics.families(collection(status(), counters=counters.read_all(c))))
    buckets = {s.labels["le"]: s.value for s in found["pvc_operation_duration_seconds"]
               if s.name.endswith("_bucket")}
    assert buckets["0.1"] == 1 and buckets["0.5"] == 3 and buckets["900.0"] == 3
    assert buckets["+Inf"] == 4


# ---------------------------------------------------------------------- families

def test_vms_are_counted_by_desired_and_observed_state_and_node() -> None:
    found = exposition(metrics.families(collection(status())))
    vms = {(s.labels["state"], s.labels["observed"], s.labels["node"]): s.value
           for s in found["pvc_vms"]}
    assert vms == {("start", "running", "hv1"): 2, ("stop", "stopped", "hv2"): 1}
    memory = {(s.labels["node"], s.labels["kind"]): s.value
              for s in found["pvc_node_memory_bytes"]}
    assert memory[("hv1", "total")] == 1024 * 2**20 and memory[("hv1", "free")] == 512 * 2**20
    assert {s.labels["node"]: s.value for s in found["pvc_database_replica_lag_bytes"]} == \
        {"hv2": 4096}


def test_the_degraded_reasons_are_labels_of_one_gauge() -> None:
    healthy = exposition(metrics.families(collection(status())))
    assert healthy["pvc_healthy"][0].value == 1 and healthy["pvc_degraded"] == []
    reasons = ["node hv2: daemon dead", "VM db1 runs on several nodes: hv1, hv2"]
    sick = exposition(metrics.families(collection(status(reasons))))
    assert sick["pvc_healthy"][0].value == 0
    assert sorted(s.labels["reason"] for s in sick["pvc_degraded"]) == sorted(reasons)


def test_vm_statistics_are_exported_per_vm_and_node() -> None:
    stats = {"hv1": {"at": 1.0, "vms": {"u1": {"cpu": 12.5, "mem": 1000, "rx": 10},
                                        "u-gone": {"cpu": 1.0}}}}
    found = exposition(metrics.families(collection(status(), vm_stats=stats)))
    assert [(s.labels, s.value) for s in found["pvc_vm_cpu_seconds"]] == \
        [({"vm": "web1", "node": "hv1"}, 12.5)]   # an undefined VM's figures are not shown
    assert found["pvc_vm_block_read_bytes"] == []


# ---------------------------------------------------------------------- the endpoint

def test_the_endpoint_answers_only_with_the_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    c = memory_cluster(metrics=MetricsConfig(enabled=True, listen="127.0.0.1", port=1,
                                             token_file=str(token)))
    exporter = MetricsExporter(c, c.config)
    exporter.snapshot.families = metrics.families(collection(status()))
    server = _server("127.0.0.1", 0, exporter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5)
            assert refused.value.code == 401
        good = {"Authorization": "Bearer s3cret"}
        body = urllib.request.urlopen(urllib.request.Request(url, headers=good),
                                      timeout=5).read().decode()
        assert 'pvc_vms{node="hv1",observed="running",state="start"} 2.0' in body
        with pytest.raises(urllib.error.HTTPError) as elsewhere:
            urllib.request.urlopen(urllib.request.Request(url[:-len("metrics")] + "x",
                                                          headers=good), timeout=5)
        assert elsewhere.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_a_collection_reads_the_cluster_through_the_status_of_cluster_status() -> None:
    c = memory_cluster()
    c.store.put(c.schema.node("hv1"), {"registered": 1.0})
    exporter = MetricsExporter(c, c.config)
    exporter.collect()
    found = exposition(exporter.snapshot.families)
    assert found["pvc_up"][0].value == 1
    # hv1 registered but its daemon never said it runs: the reason cluster status gives
    assert [s.labels["reason"] for s in found["pvc_degraded"]] == \
        [r for r in c.health()[0]]
    assert b"pvc_collect_seconds" in exporter.render()


def test_a_failed_collection_serves_pvc_up_0_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    c = memory_cluster()
    exporter = MetricsExporter(c, c.config)
    exporter.collect_or_say_down()
    assert exposition(exporter.snapshot.families)["pvc_up"][0].value == 1

    def away(*_a: Any) -> None:
        raise Unavailable("ZooKeeper does not answer")

    monkeypatch.setattr(c.store, "exists", away)
    exporter.collect_or_say_down()
    found = exposition(exporter.snapshot.families)
    assert list(found) == ["pvc_up"] and found["pvc_up"][0].value == 0


# ---------------------------------------------------------------------- VM statistics

def test_rates_come_from_two_samples_and_a_restart_has_none() -> None:
    first = figures({"u1": DomainStats(cpu_seconds=10.0, net_rx_bytes=1000)}, None, 0)
    assert first == {"u1": {"cpu": 10.0, "rx": 1000}}
    second = figures({"u1": DomainStats(cpu_seconds=11.0, net_rx_bytes=3000,
                                        memory_bytes=2**20)}, first, 2.0)
    assert second["u1"]["cpu%"] == 50.0 and second["u1"]["rx/s"] == 1000.0
    restarted = figures({"u1": DomainStats(cpu_seconds=0.5, net_rx_bytes=10)}, second, 2.0)
    assert "cpu%" not in restarted["u1"] and "rx/s" not in restarted["u1"]
    assert text(second["u1"]) == "cpu 50% (11 s), memory 1.0 MiB, network received " \
                                 "2.9 KiB (1000 B/s)"


def test_statistics_are_written_on_change_and_bounded_in_bytes() -> None:
    written: list[dict[str, Any]] = []
    sample = {"u1": DomainStats(cpu_seconds=1.0)}
    pub = StatsPublisher(lambda: dict(sample), written.append, interval=10, rate=256)
    size = pub.once()
    assert len(written) == 1 and size == len(json.dumps(written[0], separators=(",", ":")))
    assert written[-1]["vms"]["u1"] == {"cpu": 1.0}
    pub.once()                                            # the first rate (0%)
    assert written[-1]["vms"]["u1"] == {"cpu": 1.0, "cpu%": 0.0}
    assert pub.once() == 0 and len(written) == 2          # nothing moved: nothing written
    sample.update({f"u{i}": DomainStats(cpu_seconds=float(i)) for i in range(2, 200)})
    big = pub.once()
    # the publisher's next write waits size / rate: a larger sample, a longer wait
    assert big / pub.rate > pub.interval


# ---------------------------------------------------------------------- node logs

def test_node_log_lines_reach_the_store_and_kazoo_is_not_echoed() -> None:
    c = registered(memory_cluster())
    handler = nodelog.NodeLogHandler(c, "node")
    logger = logging.getLogger("pvc.test.nodelog")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("first line")
        logger.warning("two\nlines")
        logging.getLogger("kazoo.client").addHandler(handler)
        logging.getLogger("kazoo.client").warning("about the session itself")
        buf = until("the lines in the store", lambda: (
            b := nodelog.read(c, "hv1")) and len(b["lines"]) == 3 and b, 5)
    finally:
        logger.removeHandler(handler)
        logging.getLogger("kazoo.client").removeHandler(handler)
        handler.close()
    assert re.fullmatch(r"\S+ \S+ node INFO pvc.test.nodelog: first line", buf["lines"][0])
    assert buf["lines"][1].endswith("WARNING pvc.test.nodelog: two") and buf["lines"][2] == "lines"
    assert not any("session" in line for line in buf["lines"])


def test_node_log_is_bounded_in_lines() -> None:
    c = registered(memory_cluster(node_log_lines=5))
    handler = nodelog.NodeLogHandler(c, "worker")
    record = logging.LogRecord("pvc.x", logging.INFO, __file__, 1, "line %d", (0,), None)
    for i in range(50):
        record.args = (i,)
        handler.emit(record)
    handler.close()      # what is pending goes out
    buf = nodelog.read(c, "hv1")
    assert buf is not None and len(buf["lines"]) <= 5
    assert buf["lines"][-1].endswith("line 49")


# ---------------------------------------------------------------------- Prometheus, dashboard

def exported_names() -> set[str]:
    """Every metric name pvc's endpoint can serve (with the suffixes Prometheus adds)."""
    c = memory_cluster()
    for family in counters.FAMILIES:    # one series each, so every family shows
        kind, _doc, labels = counters.FAMILIES[family]
        if kind == "counter":
            counters.count(c, family, {k: "x" for k in labels})
        else:
            counters.observe(c, family, {k: "x" for k in labels}, 1.0)
    c_stats = {"hv1": {"at": 1, "vms": {"u1": {k: 1 for k in metrics.VM_METRICS}}}}
    col = collection(status(["a reason"]), counters=counters.read_all(c), vm_stats=c_stats,
                     queues={"pvc.node.hv1": 0}, tailers={"hv1": {"bytes_written": 1}})
    col.dns = {"writes": 1, "last_success": 1.0}
    exporter = MetricsExporter(c, c.config)
    exporter.snapshot.families = metrics.families(col)
    names = set()
    for family in text_string_to_metric_families(exporter.render().decode()):
        names |= {s.name for s in family.samples}
    return names


def test_every_dashboard_query_uses_metrics_pvc_exports() -> None:
    dashboard = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    names = exported_names()
    used = {m for e in exprs for m in re.findall(r"\b(pvc_[a-z_]+)", e)}
    assert used and used - names == set()


def test_the_sandbox_prometheus_scrapes_pvc_with_its_token_and_patroni() -> None:
    targets = monitoring.Targets("10.0.0.250:9105", Path("/s/token"), ["10.0.0.1:8008"],
                                 "patroni", Path("/s/patroni.password"))
    jobs = {j["job_name"]: j for j in monitoring.scrape_config(targets)["scrape_configs"]}
    assert jobs["pvc"]["authorization"] == {"type": "Bearer", "credentials_file": "/s/token"}
    assert jobs["pvc"]["static_configs"] == [{"targets": ["10.0.0.250:9105"]}]
    assert jobs["patroni"]["basic_auth"]["username"] == "patroni"
    no_db = monitoring.scrape_config(monitoring.Targets("a:1", Path("/t"), []))
    assert [j["job_name"] for j in no_db["scrape_configs"]] == ["pvc"]
