from __future__ import annotations

import pytest

from pvc.core import states
from pvc.core.errors import Conflict


def test_vm_action_table() -> None:
    assert states.vm_action("start", "stop", "v").desired == "start"
    assert states.vm_action("shutdown", "start", "v").desired == "stop"
    with pytest.raises(Conflict, match="cannot restart VM v: its state is 'stop'"):
        states.vm_action("restart", "stop", "v")


def test_operation_transitions() -> None:
    assert states.op_transition("queued", "waiting-for-lock")
    assert states.op_transition("running", "running")          # resumed after a crash
    assert not states.op_transition("succeeded", "running")
    assert not states.op_transition("failed", "succeeded")
    for terminal in states.OP_TERMINAL:
        assert states.OP_TRANSITIONS[terminal] == frozenset()


def test_daemon_state_is_dead_without_a_session() -> None:
    assert states.daemon_state("run", alive=True) == "run"
    assert states.daemon_state("run", alive=False) == "dead"
    assert states.daemon_state("stop", alive=False) == "stop"
    assert states.daemon_state(None, alive=False) == "dead"


@pytest.mark.parametrize("field,kind", [("daemon_state", states.DaemonState),
                                        ("domain_state", states.DomainState),
                                        ("coordinator_state", states.CoordinatorState)])
def test_each_node_state_table_names_only_its_states(field: str, kind: type) -> None:
    table = states.NODE_STATE_TABLES[field]
    known = {str(s) for s in kind}
    assert {k for k in table if k is not None} <= known
    assert all(set(targets) <= known for targets in table.values())
    assert states.DaemonState.DEAD not in states.DAEMON_TRANSITIONS   # derived, never stored


def test_a_refused_node_transition_names_both_states() -> None:
    states.node_transition("hv1", "daemon_state", "run", "fenced")
    states.node_transition("hv1", "daemon_state", "fenced", "fenced")   # said again
    with pytest.raises(Conflict, match="node hv1: daemon state cannot go from fenced to run"):
        states.node_transition("hv1", "daemon_state", "fenced", "run")
    with pytest.raises(Conflict, match="domain state cannot go from nothing to flushing"):
        states.node_transition("hv1", "domain_state", None, "flushing")


def test_node_states_are_written_through_their_table() -> None:
    from pvc.core.cluster import Cluster
    from pvc.core.config import Config
    from pvc.core.schema import Schema
    from tests.fakes.store import MemoryBackend
    c = Cluster(MemoryBackend().session(), Schema("/pvc"), Config())
    path = c.schema.node_field("hv1", "daemon_state")
    c.set_node_state("hv1", "daemon_state", states.DaemonState.INIT)
    c.set_node_state("hv1", "daemon_state", states.DaemonState.RUN)
    c.set_node_state("hv1", "daemon_state", states.DaemonState.FENCED)
    with pytest.raises(Conflict, match="from fenced to run"):
        c.set_node_state("hv1", "daemon_state", states.DaemonState.RUN)
    assert c.store.get_text(path) == "fenced"


def test_a_fence_record_moves_through_its_table() -> None:
    from pvc.core.cluster import Cluster
    from pvc.core.config import Config
    from pvc.core.schema import Schema
    from tests.fakes.store import MemoryBackend
    c = Cluster(MemoryBackend().session(), Schema("/pvc"), Config())
    path = c.schema.node_field("hv1", "fence")
    c.store.ensure(c.schema.node("hv1"))
    c.set_fence("hv1", states.FenceState.FAILED, error="BMC unreachable")
    c.set_fence("hv1", states.FenceState.FENCED, at=1.0)
    assert c.store.get_json(path) == {"state": "fenced", "at": 1.0}
    with pytest.raises(Conflict, match="fence cannot go from fenced to failed"):
        c.set_fence("hv1", states.FenceState.FAILED, error="late")
    c.set_fence("hv1", states.FenceState.NONE)   # the node came back
    assert c.store.get_json(path) == {}
