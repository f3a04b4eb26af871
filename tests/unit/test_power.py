"""A node's stop and start as pvc-flush.service runs them (pvc.node.power), on the in-memory
store and hypervisors with the real daemons and operations: the flush, the fallback when it
cannot empty the node, the whole-cluster shutdown, and the unflush at boot."""
from __future__ import annotations

import threading
from typing import Iterator

import pytest

from pvc.core.models import Operation
from pvc.node import executors, power
from pvc.node.context import NodeContext
from tests.fakes.cluster import FakeCluster


@pytest.fixture
def fc() -> Iterator[FakeCluster]:
    c = FakeCluster(nodes=3)
    yield c
    c.stop()


def sender(fc: FakeCluster) -> power.Send:
    """Hands an operation to its node's worker, as the broker would (in the background)."""
    def send(op: Operation) -> None:
        threading.Thread(target=lambda: _quietly(op.kind, fc.contexts[op.node], op.id),
                         daemon=True).start()
    return send


def _quietly(kind: str, ctx: NodeContext, op_id: str) -> None:
    try:
        executors.run(ctx, kind, op_id, None)
    except Exception:
        pass   # the record says how it failed


def placement(fc: FakeCluster, names: list[str]) -> dict[str, list[str]]:
    return {n: fc.world.where(n) for n in names}


def test_stop_flushes_and_start_brings_the_vms_back(fc: FakeCluster) -> None:
    names = [f"v{i}" for i in range(3)]
    for n in names:
        fc.define(n, "hv1")
    said: list[str] = []
    out = power.shutdown(fc.client, "hv1", 120, sender(fc), said.append)
    assert out.ok, out.sentence
    assert out.sentence.startswith("flushed hv1: 3 moved")
    assert fc.domain_state("hv1") == "flushed"
    assert all(fc.runs_once(n) and fc.world.where(n) != ["fake://hv1"] for n in names)
    out = power.boot(fc.client, "hv1", 30, sender(fc), said.append)
    assert out.ok, out.sentence
    assert fc.domain_state("hv1") == "ready"
    assert placement(fc, names) == {n: ["fake://hv1"] for n in names}


def test_what_cannot_move_is_shut_down_and_starts_again_at_boot(fc: FakeCluster) -> None:
    for n in ("v0", "v1"):
        fc.define(n, "hv1")
    fc.world.faults.live_fails.add("v1")                   # it cannot go anywhere
    fc.world.faults.start_fails.update({("fake://hv2", "v1"), ("fake://hv3", "v1")})
    said: list[str] = []
    out = power.shutdown(fc.client, "hv1", 120, sender(fc), said.append)
    assert out.ok, out.sentence
    assert any("did not empty hv1" in s and "v1" in s for s in said), said
    assert "1 shut down to start on unflush (v1)" in out.sentence
    assert fc.world.where("v1") == [] and fc.runs_once("v0")
    assert fc.domain_state("hv1") == "flushed"
    vm = fc.client.vm("v1").value
    assert (vm.state, vm.autostart, vm.node) == ("stop", True, "hv1")
    fc.world.faults.start_fails.clear()
    out = power.boot(fc.client, "hv1", 30, sender(fc), said.append)
    assert out.ok, out.sentence
    assert fc.world.where("v1") == ["fake://hv1"] and fc.runs_once("v0")


def test_a_whole_cluster_shutdown_moves_nothing(fc: FakeCluster) -> None:
    homes = {"v0": "hv1", "v1": "hv2", "v2": "hv3", "v3": "hv3"}
    for n, node in homes.items():
        fc.define(n, node)
    power.begin_cluster_shutdown(fc.client, "power maintenance")
    for node in ("hv3", "hv2", "hv1"):                      # stopped in reverse order
        out = power.shutdown(fc.client, node, 120, sender(fc), lambda m: None)
        assert out.ok and " 0 moved" in out.sentence, out.sentence
    assert fc.world.migrations == []                        # no VM hopped ahead of the stop
    assert all(fc.world.where(n) == [] for n in homes)
    for node in ("hv1", "hv2", "hv3"):
        assert power.boot(fc.client, node, 30, sender(fc), lambda m: None).ok
    assert fc.client.cluster_shutdown() is None        # the first boot ended it
    assert placement(fc, list(homes)) == {n: [f"fake://{h}"] for n, h in homes.items()}
    assert fc.world.migrations == []


def test_boot_waits_for_the_nodes_daemon_and_gives_up_in_time(fc: FakeCluster) -> None:
    fc.daemons["hv2"].stop()
    fc.daemons["hv2"].shutdown()
    with pytest.raises(Exception, match="hv2's daemon and worker were not up within 0.5s"):
        power.boot(fc.client, "hv2", 0.5, sender(fc), lambda m: None)
