"""Moving a VM between nodes: migrate (remembers where it came from), unmigrate (goes back),
move (forgets). Used by `pvc.vm.migrate` and by flush/unflush.

Methods: `live` (libvirt peer-to-peer to the target's libvirtd; the guest keeps running) and
`shutdown` (graceful stop on the source, start on the target from the stored XML). Live falls
back to shutdown unless live is forced; a hypervisor that cannot live-migrate uses shutdown.
`none` means the VM is never migrated. A failed move leaves the VM running on exactly one node.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, HypervisorError, InvalidInput, NotFound, PvcError
from pvc.core.models import VM, Node
from pvc.operations import records
from pvc.operations.requests import Request, commit_vm, previous, refuse_if_busy, require_acting
from pvc.operations.runner import Runner
from pvc.vm import domxml, placement
from pvc.vm.lifecycle import record_failure

if TYPE_CHECKING:
    from pvc.hypervisor.base import Hypervisor
    from pvc.operations.frame import NodeFrame

log = logging.getLogger(__name__)
OBSERVED_WAIT = 15.0   # seconds to wait for a node to publish a domain it just got or lost
MODES = ("migrate", "unmigrate", "move")


def resolve_method(requested: str, vm: VM, default: str) -> str:
    return requested or vm.migration_method or default


# ---------------------------------------------------------------------- request side

def request(cluster: Cluster, ref: str, mode: str = "migrate", target: str = "",
            method: str = "", force_live: bool = False, force: bool = False,
            reason: str = "", timeout: float = 0, bandwidth: int = 0) -> Request:
    """Validate a migrate/unmigrate/move and record it; the caller submits the task."""
    assert mode in MODES
    current = cluster.vm(ref)
    vm: VM = current.value
    refuse_if_busy(cluster, vm)
    nodes = cluster.nodes()
    running = cluster.running_on(vm.uuid, nodes)
    source = running[0] if running else vm.node
    mig = cluster.config.cluster.migration
    method = resolve_method(method, vm, mig.default_method)
    if method == "none":
        raise Conflict(f"VM {vm.name} has migration method 'none': it is never migrated "
                       "(use --method to override)")
    if mode == "unmigrate":
        if not vm.last_node:
            raise Conflict(f"VM {vm.name} has no last node to return to")
        target = vm.last_node
    elif mode == "move" and not target:
        raise InvalidInput("move needs --target NODE")
    target_node = _check_target(cluster, vm, nodes, source, target)

    prev = previous(vm)
    vm.node = target_node.name
    if mode == "migrate":
        vm.last_node = vm.last_node if (vm.last_node and not force) else source
        if vm.last_node == vm.node:
            vm.last_node = ""
    else:
        vm.last_node = ""
    op = records.new_operation(
        f"vm.{mode}", vm.name, vm.uuid, source, reason,
        args={"previous": prev, "source": source, "target": vm.node, "method": method,
              "force_live": force_live, "timeout": timeout, "bandwidth": bandwidth})
    if not running:
        records.mark_done(op, f"{vm.name} is not running: now assigned to {vm.node}")
        commit_vm(cluster, vm, current.version, op, busy=False)
        return Request(op, submit=False)
    source_node = next(n for n in nodes if n.name == source)
    require_acting(source_node, f"migrate {vm.name}")
    commit_vm(cluster, vm, current.version, op, busy=True)
    return Request(op, submit=True)


def _check_target(cluster: Cluster, vm: VM, nodes: list[Node], source: str, target: str
                  ) -> Node:
    default = cluster.config.cluster.migration.default_selector
    if not target:
        chosen = placement.choose(vm, nodes, default, exclude=[source])
        if chosen is None:
            raise Conflict(f"cannot migrate {vm.name}: "
                           + placement.why_none(vm, nodes, placement.Plan(), [source]))
        return chosen
    node = next((n for n in nodes if n.name == target), None)
    if node is None:
        raise NotFound(f"no node named {target!r}")
    if target == source:
        raise Conflict(f"VM {vm.name} is already on {target}")
    why = node.target_refusal()
    if why:
        raise Conflict(f"node {target} cannot take VMs now: it is {why}")
    free = placement.free_memory(node, placement.Plan())
    if free < vm.memory:
        raise Conflict(f"node {target} has {free} MiB free, {vm.name} needs {vm.memory} MiB")
    return node


# ---------------------------------------------------------------------- execution

@dataclass
class Move:
    vm: VM
    source: Node
    target: Node
    method: str            # live / shutdown
    force_live: bool = False
    timeout: float = 0     # seconds a live migration may take (0: the configured limit)
    bandwidth: int = 0     # MiB/s it may use (0: the configured limit)


def execute(ctx: "NodeFrame", run: Runner) -> str:
    """Migrate, unmigrate or move one VM as its operation record says."""
    assert run.record is not None
    args = run.record.args
    vm = ctx.cluster.vm(run.record.target_id).value
    nodes = {n.name: n for n in ctx.cluster.nodes()}
    move = Move(vm, nodes[args["source"]], nodes[args["target"]], args["method"],
                args.get("force_live", False), float(args.get("timeout") or 0),
                int(args.get("bandwidth") or 0))
    try:
        outcome = f"{vm.name}: " + move_vm(ctx, move, lambda m: run.progress(f"{vm.name}: {m}"))
    except PvcError as e:
        settle(ctx, vm.uuid, args["previous"], move.source, move.target)
        record_failure(ctx, vm.uuid, f"{run.record.kind}: {e}")
        raise
    record_failure(ctx, vm.uuid, "")
    return outcome


def settle(ctx: "NodeFrame", uuid: str, prev: dict[str, str], src: Node, dst: Node) -> None:
    """A move failed: point the VM's record at where it runs, asking the two hypervisors
    themselves (their published lists may still show a half-done migration)."""
    where = next((n for n in (src, dst) if _runs_on(ctx, n, uuid)), None)

    def change(data: dict) -> dict:
        if where and data["node"] != where.name:
            data["node"] = where.name
            data["last_node"] = prev.get("last_node", "")
        return data

    ctx.store.update_json(ctx.schema.vm(uuid), change)
    if where is not None:   # end the operation when `pvc vm list` agrees
        other = dst if where is src else src
        _await_published(ctx, uuid, where, other)


def _runs_on(ctx: "NodeFrame", node: Node, uuid: str) -> bool:
    try:
        return ctx.hypervisor_for(node).is_running(uuid)
    except PvcError:
        return False


def move_vm(ctx: "NodeFrame", move: Move, progress: Callable[..., None]) -> str:
    """Move a running VM from move.source to move.target. Idempotent: a VM already on the
    target is left alone; one running nowhere is started on the target."""
    vm, src, dst = move.vm, move.source, move.target
    if src.name == dst.name:
        raise Conflict(f"{vm.name} cannot migrate to its own node {src.name}")
    hv_src, hv_dst = ctx.hypervisor_for(src), ctx.hypervisor_for(dst)
    if not hv_src.is_running(vm.uuid):
        if hv_dst.is_running(vm.uuid):
            return f"already on {dst.name}"
        hv_dst.start(_xml_for(ctx, vm, dst), vm.uuid)
        _await_published(ctx, vm.uuid, dst, src)
        return f"was not running; started on {dst.name}"
    method = move.method
    if method == "live" and not (src.live_migration and dst.live_migration):
        if move.force_live:
            raise HypervisorError(f"cannot live-migrate {vm.name}: {src.name} or {dst.name} "
                                  "cannot live-migrate (forced live)")
        method = "shutdown"
    detail = ""
    if method == "live":
        try:
            detail = _live(ctx, vm, hv_src, hv_dst, dst, progress, move)
        except HypervisorError as e:
            if move.force_live or hv_dst.is_running(vm.uuid):
                raise
            progress(f"{e}; falling back to the shutdown method")
            method = "shutdown"
    if method == "shutdown":
        detail = _shutdown_move(ctx, vm, hv_src, hv_dst, src, dst, progress)
    _await_published(ctx, vm.uuid, dst, src)
    return f"{src.name} → {dst.name} ({method}{detail})"


def _live(ctx: "NodeFrame", vm: VM, hv_src: "Hypervisor", hv_dst: "Hypervisor", dst: Node,
          progress: Callable[..., None], move: Move) -> str:
    mig = ctx.config.cluster.migration
    dest_xml = domxml.for_node(hv_src.migratable_xml(vm.uuid), "", dst.console_log_directory)
    stats = hv_src.migrate_live(vm.uuid, dst.migration_uri or dst.libvirt_uri, dest_xml,
                                dst.migration_address or "127.0.0.1",
                                move.timeout or mig.timeout, progress,
                                move.bandwidth or mig.bandwidth)
    done = hv_dst.completed_migration(vm.uuid)
    downtime = f", downtime {done['downtime']} ms" if "downtime" in done else ""
    return f", {stats.elapsed_ms / 1000:.1f}s{downtime}"


def _shutdown_move(ctx: "NodeFrame", vm: VM, hv_src: "Hypervisor", hv_dst: "Hypervisor",
                   src: Node, dst: Node, progress: Callable[..., None]) -> str:
    timeout = ctx.config.cluster.operations.shutdown_timeout
    t0 = time.monotonic()
    progress(f"shutting down on {src.name}")
    how = hv_src.shutdown(vm.uuid, timeout)
    try:
        hv_dst.start(_xml_for(ctx, vm, dst), vm.uuid)
    except HypervisorError as e:
        hv_src.start(_xml_for(ctx, vm, src), vm.uuid)   # nothing lost: back where it was
        raise HypervisorError(f"could not start {vm.name} on {dst.name} ({e}); started it "
                              f"again on {src.name}") from None
    forced = ", forced off" if how == "forced off" else ""
    return f", {time.monotonic() - t0:.1f}s{forced}"


def _xml_for(ctx: "NodeFrame", vm: VM, node: Node) -> str:
    return domxml.for_node(ctx.cluster.vm_xml(vm.uuid), node.domain_type,
                           node.console_log_directory)


def _await_published(ctx: "NodeFrame", uuid: str, here: Node, gone: Node) -> None:
    """Each node publishes what it runs (on libvirt's events); wait until both agree that the
    VM runs on `here` and not on `gone`, so the operation ends when `pvc vm list` shows it."""
    for node, present in ((here, True), (gone, False)):
        if not ctx.observed.wait(node.name, uuid, present, OBSERVED_WAIT):
            log.warning("%s has not published %s yet", node.name, uuid)
