"""Observability on the e2e sandbox (tests/e2e/conftest.py: with its database and its
Prometheus): pvc's endpoint scraped for real, the figures checked through Prometheus's query
API against what the CLI says; node logs read from the cluster."""
from __future__ import annotations

import json
import queue
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import OFFSET, LineReader, Pvc, wait_until
from tests.prometheus import Client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def prometheus(pvc: Pvc) -> Client:
    st = pvc.status()["prometheus"]
    return Client(int(st["url"].rsplit(":", 1)[1]),
                  Path(st["password_file"]).read_text().strip())


def vms_by_state(pvc: Pvc) -> dict[str, int]:
    return dict(Counter(v["state"] for v in pvc.json("vm", "list")))


def prometheus_vms_by_state(prometheus: Client) -> dict[str, int]:
    return {r["metric"]["state"]: int(float(r["value"][1]))
            for r in prometheus.query("sum by (state) (pvc_vms)")}


def test_prometheus_scrapes_pvc_and_patroni(prometheus: Client) -> None:
    def targets() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for t in prometheus.targets():
            found.setdefault(t["labels"]["job"], []).append(t["health"])
        return found

    wait_until("pvc's and every Patroni's target to be up", lambda: targets() ==
               {"pvc": ["up"], "patroni": ["up", "up", "up"]}, 60)
    assert prometheus.query("pvc_up")[0]["value"][1] == "1"
    healthy = prometheus.query("pvc_healthy")[0]["value"][1]
    reasons = prometheus.query("pvc_degraded")
    assert (healthy == "1") == (reasons == [])


def test_pvc_vms_in_prometheus_follow_vm_list(pvc: Pvc, prometheus: Client) -> None:
    before = vms_by_state(pvc)
    wait_until("Prometheus to have pvc_vms as vm list says",
               lambda: prometheus_vms_by_state(prometheus) == before, 60)
    running = next(v["name"] for v in pvc.json("vm", "list")
                   if v["state"] == "start" and v["observed"] == "running")
    pvc("vm", "stop", running, "--wait")
    after = vms_by_state(pvc)
    assert after == {**before, "start": before["start"] - 1,
                     "stop": before.get("stop", 0) + 1}
    wait_until("Prometheus to see the stop", lambda: prometheus_vms_by_state(prometheus)
               == after, 60)
    observed = {r["metric"]["observed"]: int(float(r["value"][1]))
                for r in prometheus.query('sum by (observed) (pvc_vms{state="stop"})')}
    assert observed.get("stopped") == after["stop"]
    # the stop's operation was counted, with its duration
    wait_until("the stop's duration in Prometheus", lambda: prometheus.query(
        'pvc_operation_duration_seconds_count{kind="vm.stop",state="succeeded"}'), 30)
    pvc("vm", "start", running, "--wait")


def test_the_endpoint_refuses_a_scrape_without_the_token(pvc: Pvc) -> None:
    st = pvc.status()["prometheus"]
    url = st["metrics"]
    for headers in ({}, {"Authorization": "Bearer not-the-token"},
                    {"Authorization": "Basic cHZjOnB2Yw=="}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5)
        assert refused.value.code == 401
    token = Path(st["metrics_token_file"]).read_text().strip()
    with urllib.request.urlopen(urllib.request.Request(
            url, headers={"Authorization": f"Bearer {token}"}), timeout=5) as answer:
        assert b"pvc_vms{" in answer.read()
    # and Prometheus's own UI and API want its password
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(st["url"] + "/api/v1/targets", timeout=5)
    assert refused.value.code == 401


def test_cluster_status_and_the_metrics_give_the_same_reasons(pvc: Pvc,
                                                              prometheus: Client) -> None:
    pvc("node", "cordon", "hv3")          # healthy still: a cordon is not a problem
    pvc("sandbox", "process", "stop", "worker-hv3", "--port-offset", OFFSET)
    try:
        def agree() -> set[str]:
            """cluster status's reasons, once Prometheus gives the same (it lags a scrape)."""
            told = set(pvc.cluster_status()["reasons"])
            scraped = {r["metric"]["reason"] for r in prometheus.query("pvc_degraded")}
            return told if told == scraped else set()

        reasons = wait_until("cluster status and Prometheus to give the same reasons, hv3's "
                             "missing worker among them", lambda: (
                                 found := agree()) and any("hv3: no running worker" in r
                                                           for r in found) and found, 60)
        assert reasons
        assert prometheus.query("pvc_healthy")[0]["value"][1] == "0"
    finally:
        pvc("sandbox", "process", "start", "worker-hv3", "--port-offset", OFFSET)
        pvc("node", "uncordon", "hv3")
    wait_until("the cluster healthy again", lambda: pvc.cluster_status()["healthy"], 60)


def test_the_endpoint_follows_the_primary(pvc: Pvc, prometheus: Client) -> None:
    """A switchover: the floating IP and the endpoint move; Prometheus's one target stays."""
    before = pvc.cluster_status()["primary"]
    target = "hv2" if before != "hv2" else "hv1"
    pvc("node", "primary", target, "--wait")
    wait_until(f"Prometheus to read pvc_primary from {target}", lambda: [
        r["metric"]["node"] for r in prometheus.query("pvc_primary")] == [target], 60)
    assert [t["health"] for t in prometheus.targets() if t["labels"]["job"] == "pvc"] == \
        ["up"]
    # counted when the operation ends, which may be a collection after the role moved
    wait_until("the switchover counted", lambda: prometheus.query(
        'pvc_switchovers_total{result="done"} >= 1'), 30)
    pvc("node", "primary", before, "--wait")


def node_log(pvc: Pvc, node: str, *args: str) -> list[str]:
    return list(pvc("node", "log", node, *args).stdout.splitlines())


def test_node_log_has_every_process_of_the_node(pvc: Pvc) -> None:
    node = pvc.json("vm", "info", "demo2")["running_on"][0]
    other = "hv1" if node != "hv1" else "hv2"
    pvc("vm", "stop", "demo2", "--wait")      # the worker of demo2's node logs the task
    pvc("vm", "start", "demo2", "--wait")
    lines = wait_until(f"{node}'s worker to log the stop", lambda: (
        found := node_log(pvc, node)) and any(" worker " in x and "pvc.vm.stop" in x
                                               for x in found) and found, 30)
    processes = {line.split()[2] for line in lines}
    assert {"node", "worker", "tailer"} <= processes
    assert len(node_log(pvc, node, "--lines", "3")) == 3
    assert not any(f"node {other} is running" in x for x in lines)   # its own, no other's


def test_node_log_follow_prints_new_lines(pvc: Pvc) -> None:
    node = pvc.json("vm", "info", "demo1")["running_on"][0]
    with LineReader(["node", "log", node, "--follow", "--lines", "0"], pvc.env) as follower:
        pvc("vm", "stop", "demo1", "--wait")   # its node's worker logs it
        line = wait_until("the follower to print the stop", lambda: _next_with(
            follower, "pvc.vm.stop"), 30)
        assert " worker " in line
    pvc("vm", "start", "demo1", "--wait")


def _next_with(reader: LineReader, text: str) -> str:
    """The next line the reader printed if it holds text ("" when none or another)."""
    try:
        line = reader.line(timeout=1)
    except queue.Empty:
        return ""
    return line if text in line else ""


def test_node_log_of_an_unknown_node_is_one_line(pvc: Pvc) -> None:
    line = pvc.error("node", "log", "hv9")
    assert "hv9" in line


def test_vm_list_stats_as_json(pvc: Pvc) -> None:
    rows: list[dict[str, Any]] = pvc.json("vm", "list", "--stats")
    assert {f"demo{i}" for i in range(1, 7)} <= {r["name"] for r in rows}
    assert all("stats" in r for r in rows)   # the test driver reports no figures: {}
    assert json.loads(json.dumps(rows)) == rows
