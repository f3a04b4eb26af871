"""Is the cluster able to act, and if not, why: one reason per problem, each naming what is
wrong. `cluster status` is healthy exactly when this finds nothing.

Pure over a snapshot (nodes, VMs, operations, busy VMs), so every rule is unit-tested.
"""
from __future__ import annotations

from dataclasses import dataclass

from pvc.core import states
from pvc.core.models import VM, Node, Operation
from pvc.core.states import DaemonState, VmState


@dataclass(frozen=True)
class Snapshot:
    nodes: list[Node]
    vms: list[VM]
    operations: list[Operation]
    busy: dict[str, str]             # VM uuid -> operation id
    executors: set[str]              # ids of operations with a live executor
    now: float


def reasons(s: Snapshot, stuck_after: float, drift_grace: float) -> list[str]:
    """Every reason the cluster is degraded ([] when healthy)."""
    if not s.nodes:
        return ["no node has registered"]
    return (_node_reasons(s) + _operation_reasons(s, stuck_after)
            + _vm_reasons(s, drift_grace))


def _node_reasons(s: Snapshot) -> list[str]:
    out = []
    for n in s.nodes:
        if n.fence.get("state") == "failed":
            out.append(f"node {n.name}: fence failed ({n.fence.get('error')}); its VMs were not "
                       "started elsewhere, pvc tries again")
        out += [f"node {n.name}: its BMC {problem}: fencing it proves nothing (README, "
                f"Security: what to set on a BMC)" for problem in n.bmc.get("problems", [])]
        if n.daemon_state == DaemonState.RUN:   # a dead daemon's last word is not news
            out += [f"node {n.name}: {problem}" for _svc, problem in sorted(n.services.items())]
        if n.daemon_state != DaemonState.RUN:
            out.append(f"node {n.name}: daemon {n.daemon_state}")
        elif n.workers == 0:
            out.append(f"node {n.name}: no running worker, it cannot run operations")
    return out


def _operation_reasons(s: Snapshot, stuck_after: float) -> list[str]:
    out = []
    for op in s.operations:
        if op.state in states.OP_TERMINAL:
            continue
        idle = s.now - max([op.created] + [h[0] for h in op.history])
        if idle < stuck_after:
            continue
        if op.state == states.OpState.QUEUED:
            out.append(f"operation {op.id} ({op.kind} {op.target}) queued for {idle:.0f}s: "
                       f"no worker of {op.node} took it")
        elif op.id not in s.executors:
            out.append(f"operation {op.id} ({op.kind} {op.target}) {op.state} for "
                       f"{idle:.0f}s with no live executor")
    return out


def _vm_reasons(s: Snapshot, drift_grace: float) -> list[str]:
    out = []
    live = {n.name for n in s.nodes if n.daemon_state == DaemonState.RUN}
    known = {vm.uuid for vm in s.vms}
    for vm in s.vms:
        where = [n.name for n in s.nodes if vm.uuid in n.domains]
        if len(where) > 1:
            out.append(f"VM {vm.name} runs on several nodes: {', '.join(where)}")
        elif where and where[0] != vm.node and vm.uuid not in s.busy:
            out.append(f"VM {vm.name} runs on {where[0]}, recorded on {vm.node or 'no node'}")
        if vm.state == VmState.START and vm.node and vm.node not in live:
            out.append(f"VM {vm.name} should run on {vm.node}, whose daemon is not running")
    for n in s.nodes:
        for uuid, drift in sorted(n.drift.items()):
            if s.now - float(drift.get("since", s.now)) >= drift_grace:
                out.append(f"VM {drift.get('name', uuid)} on {n.name}: {drift.get('why')} "
                           f"(for {s.now - float(drift['since']):.0f}s)")
        unknown = sorted(d.get("name", u) for u, d in n.domains.items() if u not in known)
        if unknown:
            out.append(f"node {n.name} runs domains pvc does not know: {', '.join(unknown)}")
    return out
