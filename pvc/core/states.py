"""State machines as tables. Code asks these tables; it does not spell transitions in ifs."""
from __future__ import annotations

from dataclasses import dataclass

from pvc.core.errors import Conflict

# ---------------------------------------------------------------- VM desired state

@dataclass(frozen=True)
class VmAction:
    """What an operator's VM action requires and leaves behind."""
    allowed_from: frozenset[str]    # desired states the action accepts
    desired: str                    # desired state once requested
    needs_running: bool             # act on the node running it (False: place it if needed)
    task: str                       # the Celery task that carries it out


VM_ACTIONS: dict[str, VmAction] = {
    "start": VmAction(frozenset({"start", "stop", "disable"}), "start", False, "pvc.vm.start"),
    "stop": VmAction(frozenset({"start", "stop", "disable"}), "stop", True, "pvc.vm.stop"),
    "shutdown": VmAction(frozenset({"start", "stop"}), "stop", True, "pvc.vm.shutdown"),
    "restart": VmAction(frozenset({"start"}), "start", True, "pvc.vm.restart"),
    "disable": VmAction(frozenset({"start", "stop", "disable"}), "disable", True,
                        "pvc.vm.shutdown"),
}


def vm_action(action: str, current: str, vm_name: str) -> VmAction:
    rule = VM_ACTIONS[action]
    if current not in rule.allowed_from:
        raise Conflict(f"cannot {action} VM {vm_name}: its state is {current!r}")
    return rule


# ---------------------------------------------------------------- operation records

OP_QUEUED = "queued"
OP_WAITING = "waiting-for-lock"
OP_RUNNING = "running"
OP_SUCCEEDED = "succeeded"
OP_FAILED = "failed"
OP_CANCELLED = "cancelled"

OP_TERMINAL = frozenset({OP_SUCCEEDED, OP_FAILED, OP_CANCELLED})

OP_TRANSITIONS: dict[str, frozenset[str]] = {
    OP_QUEUED: frozenset({OP_WAITING, OP_RUNNING, OP_FAILED, OP_CANCELLED, OP_SUCCEEDED}),
    OP_WAITING: frozenset({OP_RUNNING, OP_FAILED, OP_CANCELLED}),
    # running -> running / waiting-for-lock: a redelivered task resumes after its worker died
    # (waiting for its lock again first, if it has one)
    OP_RUNNING: frozenset({OP_RUNNING, OP_WAITING, OP_SUCCEEDED, OP_FAILED, OP_CANCELLED}),
    OP_SUCCEEDED: frozenset(),
    OP_FAILED: frozenset(),
    OP_CANCELLED: frozenset(),
}


# Which operations an operator can still cancel, by state. A running flush or unflush stops
# after the migrations in flight; a running VM operation is too far gone (it ends on its own).
OP_CANCEL_NOW = frozenset({OP_QUEUED, OP_WAITING})
OP_CANCEL_WHILE_RUNNING = frozenset({"node.flush", "node.unflush"})


def op_transition(current: str, new: str) -> bool:
    """True if an operation may go from current to new."""
    return new in OP_TRANSITIONS.get(current, frozenset())


# ---------------------------------------------------------------- node states


def daemon_state(stored: str | None, alive: bool) -> str:
    """What other nodes see: a daemon that says it runs but has no live session is dead."""
    if stored in ("init", "run") and not alive:
        return "dead"
    return stored or "dead"
