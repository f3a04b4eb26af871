"""States as enums, and their transitions as tables. Code asks these tables; it does not spell
transitions in ifs.

The enums are `str` subclasses: they are stored in ZooKeeper and compared with stored text as
they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from pvc.core.errors import Conflict

# ---------------------------------------------------------------- nodes

class DaemonState(StrEnum):
    INIT = "init"
    RUN = "run"
    STOP = "stop"
    DEAD = "dead"        # derived: says it runs, but its session (liveness znode) is gone
    FENCED = "fenced"    # powered off by the primary after it died; its VMs went elsewhere


class DomainState(StrEnum):
    READY = "ready"
    FLUSHING = "flushing"
    FLUSHED = "flushed"
    UNFLUSHING = "unflushing"


class FenceState(StrEnum):
    """A node's fence record (`fence`): none pending, done, or failed (its VMs stay)."""
    NONE = "none"        # stored as {}: no fence, or the node came back since
    FENCED = "fenced"
    FAILED = "failed"


class CoordinatorState(StrEnum):
    CLIENT = "client"            # not a coordinator
    PRIMARY = "primary"
    SECONDARY = "secondary"
    TAKEOVER = "takeover"        # becoming primary
    RELINQUISH = "relinquish"    # giving the primary role away


@dataclass(frozen=True)
class DomainOp:
    """A node operation's effect on the node's domain state, and on Ceph's `noout` for its
    OSDs (None: left as it is): set when a flush begins (Ceph copies nothing while the node
    reboots), cleared when an unflush has brought it back."""
    during: DomainState
    after: DomainState
    noout_during: bool | None = None
    noout_after: bool | None = None


DOMAIN_OPS: dict[str, DomainOp] = {
    "flush": DomainOp(DomainState.FLUSHING, DomainState.FLUSHED, noout_during=True),
    "unflush": DomainOp(DomainState.UNFLUSHING, DomainState.READY, noout_after=False),
}


# Domain states in which a node's OSDs may carry the flush's noout.
NOOUT_STATES = frozenset({DomainState.FLUSHING, DomainState.FLUSHED, DomainState.UNFLUSHING})

S = TypeVar("S", bound=StrEnum)

# Node states are written by one helper (Cluster.set_node_state), which checks the move
# against these tables inside its compare-and-set. A state may always be written again.
# None: nothing stored yet (a node's first start).
D, M, C = DaemonState, DomainState, CoordinatorState

DAEMON_TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({D.INIT}),
    D.INIT: frozenset({D.RUN, D.STOP, D.FENCED}),
    D.RUN: frozenset({D.INIT, D.STOP, D.FENCED}),    # INIT: started again after a crash
    D.STOP: frozenset({D.INIT, D.FENCED}),           # FENCED: powered off by an operator
    D.FENCED: frozenset({D.INIT}),                   # powered on: never back to run unseen
}

# A fence makes any node flushed (its VMs went elsewhere); an unflush may follow a flush that
# failed or was cancelled (the node stays flushing), a flush an unflush that did.
DOMAIN_TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({M.READY, M.FLUSHED}),
    M.READY: frozenset({M.FLUSHING, M.UNFLUSHING, M.FLUSHED}),
    M.FLUSHING: frozenset({M.FLUSHED, M.UNFLUSHING}),
    M.FLUSHED: frozenset({M.FLUSHING, M.UNFLUSHING}),
    M.UNFLUSHING: frozenset({M.READY, M.FLUSHING, M.FLUSHED}),
}

# A coordinator starts (again) as a secondary; the role's handoff table moves it on.
COORDINATOR_TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({C.SECONDARY, C.CLIENT}),
    C.CLIENT: frozenset({C.SECONDARY}),
    C.SECONDARY: frozenset({C.TAKEOVER, C.PRIMARY, C.RELINQUISH, C.CLIENT}),
    C.TAKEOVER: frozenset({C.PRIMARY, C.SECONDARY}),
    C.PRIMARY: frozenset({C.RELINQUISH, C.SECONDARY, C.TAKEOVER}),
    C.RELINQUISH: frozenset({C.SECONDARY, C.PRIMARY, C.TAKEOVER}),
}

# A fence is recorded done or failed; a failed one may be done by the next attempt; a node that
# comes back clears it. A done fence is never recorded failed afterwards (the node was off).
F = FenceState
FENCE_TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({F.NONE, F.FENCED, F.FAILED}),
    F.NONE: frozenset({F.FENCED, F.FAILED}),
    F.FAILED: frozenset({F.FENCED, F.NONE}),
    F.FENCED: frozenset({F.NONE}),
}

NODE_STATE_TABLES: dict[str, dict[str | None, frozenset[str]]] = {
    "daemon_state": DAEMON_TRANSITIONS,
    "domain_state": DOMAIN_TRANSITIONS,
    "coordinator_state": COORDINATOR_TRANSITIONS,
    "fence": FENCE_TRANSITIONS,
}


def node_transition(node: str, field: str, current: str | None, new: str) -> None:
    """Raise Conflict, naming both states, unless the node's field may go from current
    (None: nothing stored) to new."""
    if current == new:
        return
    if new not in NODE_STATE_TABLES[field].get(current, frozenset()):
        label = field.replace("_", " ")
        raise Conflict(f"node {node}: {label} cannot go from {current or 'nothing'} to {new}")


def stored(kind: type[S], text: str | None, default: S) -> S:
    """A state as stored (text); the default when nothing or something unknown is."""
    try:
        return kind(text) if text else default
    except ValueError:
        return default


def daemon_state(stored: str | None, alive: bool) -> DaemonState:
    """What other nodes see: a daemon that says it runs but has no live session is dead."""
    try:
        state = DaemonState(stored or DaemonState.DEAD)
    except ValueError:
        return DaemonState.DEAD
    if state in (DaemonState.INIT, DaemonState.RUN) and not alive:
        return DaemonState.DEAD
    return state


# ---------------------------------------------------------------- VM desired state

class VmState(StrEnum):
    """What the operator asked for."""
    START = "start"
    STOP = "stop"
    DISABLE = "disable"


@dataclass(frozen=True)
class VmAction:
    """What an operator's VM action requires and leaves behind."""
    allowed_from: frozenset[VmState]   # desired states the action accepts
    desired: VmState                   # desired state once requested
    needs_running: bool                # act on the node running it (False: place it if needed)


_ANY = frozenset(VmState)

VM_ACTIONS: dict[str, VmAction] = {
    "start": VmAction(_ANY, VmState.START, False),
    "stop": VmAction(_ANY, VmState.STOP, True),
    "shutdown": VmAction(frozenset({VmState.START, VmState.STOP}), VmState.STOP, True),
    "restart": VmAction(frozenset({VmState.START}), VmState.START, True),
    "disable": VmAction(_ANY, VmState.DISABLE, True),
}


def vm_action(action: str, current: str, vm_name: str) -> VmAction:
    rule = VM_ACTIONS[action]
    if current not in rule.allowed_from:
        raise Conflict(f"cannot {action} VM {vm_name}: its state is {current!r}")
    return rule


# ---------------------------------------------------------------- operation records

class OpState(StrEnum):
    QUEUED = "queued"
    WAITING = "waiting-for-lock"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"    # its process was stopped by a signal while it ran


OP_TERMINAL = frozenset({OpState.SUCCEEDED, OpState.FAILED, OpState.CANCELLED,
                         OpState.TERMINATED})

OP_TRANSITIONS: dict[OpState, frozenset[OpState]] = {
    OpState.QUEUED: frozenset({OpState.WAITING, OpState.RUNNING, OpState.FAILED,
                               OpState.CANCELLED, OpState.SUCCEEDED}),
    OpState.WAITING: frozenset({OpState.RUNNING, OpState.FAILED, OpState.CANCELLED,
                                OpState.TERMINATED}),
    # running -> running / waiting-for-lock: a redelivered task resumes after its worker died
    # (waiting for its lock again first, if it has one)
    OpState.RUNNING: frozenset({OpState.RUNNING, OpState.WAITING, OpState.SUCCEEDED,
                                OpState.FAILED, OpState.CANCELLED, OpState.TERMINATED}),
    OpState.SUCCEEDED: frozenset(),
    OpState.FAILED: frozenset(),
    OpState.CANCELLED: frozenset(),
    OpState.TERMINATED: frozenset(),
}


# Which operations an operator can still cancel, by state. A running flush or unflush stops
# after the migrations in flight, a running batch after the VMs in hand; a running VM
# operation is too far gone (it ends on its own).
OP_CANCEL_NOW = frozenset({OpState.QUEUED, OpState.WAITING})
OP_CANCEL_WHILE_RUNNING = frozenset({"node.flush", "node.unflush", "vms.start", "vms.stop",
                                     "vms.shutdown", "vms.restart", "vms.disable"})


def op_transition(current: str, new: str) -> bool:
    """True if an operation may go from current to new."""
    return new in OP_TRANSITIONS.get(OpState(current), frozenset())
