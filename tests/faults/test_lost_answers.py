"""A write's answer lost between ZooKeeper and pvc: the server applied the write, the client
saw only a dropped connection and sent the write again. The connection runs through a proxy
that cuts it exactly when the server's answer to the chosen write comes back (tests/answerdrop),
against the real ZooKeeper. The write must count as the caller's: an operation is recorded once
and not refused, and its executor runs it once and ends, instead of waiting for a lease that
its own session holds."""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Iterator

import pytest

from pvc.core import states
from pvc.core.cluster import Cluster
from pvc.core.models import Operation
from pvc.operations import records
from pvc.operations.runner import Runner
from tests.answerdrop import AnswerDropper
from tests.conftest import make_config

pytestmark = pytest.mark.faults
BOUND = 30   # seconds: an executor that has not ended by then is stuck


@pytest.fixture
def proxy(services: Any) -> Iterator[AnswerDropper]:
    host, port = services.zk_hosts.split(":")
    p = AnswerDropper((host, int(port)))
    yield p
    p.close()


@pytest.fixture
def cluster(services: Any, zk_root: str, proxy: AnswerDropper) -> Iterator[Cluster]:
    cfg = make_config(services, zk_root)
    zookeeper = replace(cfg.cluster.zookeeper, hosts=proxy.hosts)
    c = Cluster.connect(replace(cfg, cluster=replace(cfg.cluster, zookeeper=zookeeper)))
    yield c
    c.close()


def _flush_of(cluster: Cluster, node: str) -> Operation:
    return records.new_operation("node.flush", "node", node, node, reason="lost answers")


def test_a_node_operation_whose_answer_was_lost_is_recorded_once_not_refused(
        cluster: Cluster, proxy: AnswerDropper) -> None:
    op = _flush_of(cluster, "hv1")
    proxy.arm()
    records.record_node_operation(cluster, op)   # before: "hv1 already has operation <op>"
    assert proxy.dropped == ["multi"]
    assert cluster.store.get_text(cluster.schema.node_operation("hv1")) == op.id
    assert [o.id for o in cluster.operations()] == [op.id]
    assert cluster.operation(op.id).state == states.OpState.QUEUED


def test_an_executor_whose_lease_answer_was_lost_runs_once_and_ends(
        cluster: Cluster, proxy: AnswerDropper) -> None:
    op = _flush_of(cluster, "hv2")
    records.record_node_operation(cluster, op)
    runs: list[str] = []

    def execute() -> None:
        with Runner(cluster, op.id, worker="hv2:1") as run:
            if run.record is None:
                return
            runs.append(run.record.id)
            run.running()
            run.succeed("flushed")

    proxy.arm()   # the first write of an executor is its lease
    executor = threading.Thread(target=execute, daemon=True)
    executor.start()
    executor.join(BOUND)
    assert not executor.is_alive(), "the executor waits for the lease its own session holds"
    assert proxy.dropped in (["create"], ["create2"])
    assert runs == [op.id]
    assert cluster.operation(op.id).state == states.OpState.SUCCEEDED
    assert not cluster.store.exists(cluster.schema.operation_executor(op.id))
    assert not cluster.store.exists(cluster.schema.node_operation("hv2"))
