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
