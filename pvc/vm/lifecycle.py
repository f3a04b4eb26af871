"""VM lifecycle operations: start, stop (hard), shutdown (graceful, then hard), restart,
disable.

Request side (CLI): validate (no I/O) → check preconditions → one transaction that sets the
desired state, marks the VM busy and creates the operation record (`pvc.operations.requests`).

Execution side (the node's worker): `execute` re-reads ZooKeeper and makes the hypervisor match.
Idempotent: run twice, same result.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from pvc.core import states
from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, HypervisorError, NotFound, PvcError
from pvc.core.models import VM, Node
from pvc.core.store import VersionConflict
from pvc.operations import records
from pvc.operations.requests import Request, commit_vm, previous, refuse_if_busy, require_acting
from pvc.operations.runner import Runner
from pvc.vm import placement

if TYPE_CHECKING:  # the CLI imports this module for requests: keep the hypervisor out of it
    from pvc.operations.frame import NodeFrame

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- request side

def request(cluster: Cluster, ref: str, action: str, reason: str = "") -> Request:
    current = cluster.vm(ref)
    vm: VM = current.value
    rule = states.vm_action(action, vm.state, vm.name)
    refuse_if_busy(cluster, vm)
    nodes = cluster.nodes()
    running = cluster.running_on(vm.uuid, nodes)
    if len(running) > 1:
        raise Conflict(f"VM {vm.name} runs on several nodes ({', '.join(running)}); "
                       "resolve that first")
    node = acting_node(cluster, vm, rule, running, nodes)
    op = records.new_operation(f"vm.{action}", vm.name, vm.uuid, node, reason,
                               args={"previous": previous(vm)})
    if rule.needs_running and not running:
        # Nothing runs: the change is only in the desired state; no node needs to act.
        records.mark_done(op, f"{vm.name} was not running")
        vm.state = rule.desired
        commit_vm(cluster, vm, current.version, op, busy=False)
        return Request(op, submit=False)
    vm.state, vm.node = rule.desired, node
    commit_vm(cluster, vm, current.version, op, busy=True)
    return Request(op, submit=True)


def acting_node(cluster: Cluster, vm: VM, rule: states.VmAction, running: list[str],
                nodes: list[Node], plan: placement.Plan | None = None) -> str:
    """The node whose worker must carry out the action. plan: what this round already
    placed (a batch places each start counting those before it); a start placed here is
    added to it."""
    plan = plan if plan is not None else placement.Plan()
    if running:
        target = running[0]       # act where it runs (a start there is a no-op)
    elif rule.needs_running:
        return vm.node            # nothing runs: no node needs to act
    else:
        assigned = next((n for n in nodes if n.name == vm.node), None)
        # its node may not take VMs now (flushed, down, full): place it elsewhere
        roomy = assigned and placement.free_memory(assigned, plan) >= vm.memory
        target = vm.node if assigned and assigned.is_target() and roomy else \
            _place(cluster, vm, nodes, plan)
        plan.add(target, vm)
    node = next((n for n in nodes if n.name == target), None)
    if node is None:
        raise NotFound(f"VM {vm.name} is assigned to unknown node {target!r}")
    require_acting(node, f"act on {vm.name}")
    if not node.enable_hypervisor:
        raise Conflict(f"node {target} has its hypervisor disabled; it runs no VMs")
    why = node.target_refusal()
    if not rule.needs_running and why and target not in running:
        raise Conflict(f"node {target} takes no VMs now ({why})")
    return target


def _place(cluster: Cluster, vm: VM, nodes: list[Node], plan: placement.Plan) -> str:
    default = cluster.config.cluster.migration.default_selector
    chosen = placement.choose(vm, nodes, default, plan)
    if chosen is None:
        raise Conflict(f"cannot place VM {vm.name}: "
                       + placement.why_none(vm, nodes, plan))
    return chosen.name


# ---------------------------------------------------------------------- execution side

def execute(ctx: "NodeFrame", run: Runner) -> str:
    """Carry out a VM action (the record's kind says which) on this node. Returns the
    outcome sentence."""
    assert run.record is not None
    action = run.record.kind.split(".", 1)[1]
    uuid = run.record.target_id
    vm = _vm_here(ctx, uuid)
    try:
        outcome = ACTIONS[action](ctx, vm)
    except HypervisorError as e:
        record_failure(ctx, uuid, str(e))
        raise
    finally:
        ctx.refresh()
    record_failure(ctx, uuid, "")
    return outcome


def _vm_here(ctx: "NodeFrame", uuid: str) -> VM:
    vm = VM.from_json(ctx.store.get_json(ctx.schema.vm(uuid)))
    if vm.node != ctx.name and not ctx.hv.is_running(uuid):
        raise Conflict(f"VM {vm.name} is assigned to {vm.node or 'no node'}, not {ctx.name}")
    return vm


def _start(ctx: "NodeFrame", vm: VM) -> str:
    started = ctx.hv.start(ctx.node_xml(vm.uuid), vm.uuid)
    return f"{vm.name} started on {ctx.name}" if started else f"{vm.name} was already running"


def _stop(ctx: "NodeFrame", vm: VM) -> str:
    stopped = ctx.hv.destroy(vm.uuid)
    return f"{vm.name} stopped" if stopped else f"{vm.name} was not running"


def _shutdown(ctx: "NodeFrame", vm: VM) -> str:
    timeout = ctx.config.cluster.operations.shutdown_timeout
    result = ctx.hv.shutdown(vm.uuid, timeout)
    if result == "forced off":
        return f"{vm.name} did not shut down within {timeout:g}s and was forced off"
    return f"{vm.name} {result}"


def _restart(ctx: "NodeFrame", vm: VM) -> str:
    first = _shutdown(ctx, vm)
    _start(ctx, vm)
    return f"{first}; started again on {ctx.name}"


ACTIONS: dict[str, Callable[["NodeFrame", VM], str]] = {
    "start": _start,
    "stop": _stop,
    "shutdown": _shutdown,
    "restart": _restart,
    "disable": _shutdown,
}


def record_failure(ctx: "NodeFrame", uuid: str, failure: str) -> None:
    """Keep the last operation's failure on the VM (cleared by a success)."""
    def change(data: dict) -> dict:
        data["failure"] = failure
        return data

    try:
        current = ctx.store.get_json(ctx.schema.vm(uuid))
        if current.get("failure", "") != failure:
            ctx.store.update_json(ctx.schema.vm(uuid), change)
    except (PvcError, VersionConflict):
        log.warning("could not record failure %r on VM %s", failure, uuid)
