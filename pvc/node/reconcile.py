"""A node's start-up reconcile: make this node's hypervisor match the cluster's desired state.

Reads the cluster state once (all VM records in one pipelined round), asks libvirt once for the
running domains, and touches libvirt only for the VMs that concern this node. Never sleeps.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from pvc.core.errors import PvcError
from pvc.core.models import VM
from pvc.core.states import VmState
from pvc.hypervisor.base import RunningDomain
from pvc.node.context import NodeContext
from pvc.vm import domxml

log = logging.getLogger(__name__)
PARALLEL_LIBVIRT_CALLS = 4


@dataclass
class Decision:
    start: list[VM] = field(default_factory=list)
    stop: list[tuple[str, str, str]] = field(default_factory=list)   # uuid, name, why
    left_alone: list[str] = field(default_factory=list)              # names, with the reason


def decide(me: str, vms: list[VM], running: dict[str, RunningDomain],
           busy: set[str]) -> Decision:
    """Pure: what to start and stop here. VMs with an operation in flight are the operation's
    business and are left alone."""
    d = Decision()
    known = {vm.uuid: vm for vm in vms}
    for vm in vms:
        if vm.state == VmState.START and vm.node == me and vm.uuid not in running:
            if vm.uuid in busy:
                d.left_alone.append(f"{vm.name} (operation in flight)")
            else:
                d.start.append(vm)
    for uuid, dom in running.items():
        found = known.get(uuid)
        if found is None:
            d.left_alone.append(f"{dom.name} (not a pvc VM)")
        elif uuid in busy:
            d.left_alone.append(f"{found.name} (operation in flight)")
        elif found.node != me:
            d.stop.append((uuid, found.name, f"assigned to {found.node or 'no node'}"))
        elif found.state != VmState.START:
            d.stop.append((uuid, found.name, f"desired state is {found.state}"))
    return d


@dataclass
class Result:
    started: list[str] = field(default_factory=list)
    started_uuids: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    left_alone: list[str] = field(default_factory=list)
    # what it could not fix (a failed start or stop, a crash loop): uuid -> (name, why)
    unresolved: dict[str, tuple[str, str]] = field(default_factory=dict)
    vms: int = 0
    seconds: float = 0.0

    def what_changed(self) -> str:
        """The changes alone, without timings: "started 2, stopped 1, failed 1 (why)"."""
        parts = [f"started {len(self.started)}", f"stopped {len(self.stopped)}"]
        if self.failed:
            parts.append(f"failed {len(self.failed)} ({'; '.join(self.failed)})")
        return ", ".join(parts)

    def sentence(self) -> str:
        parts = [f"reconciled {self.vms} VMs in {self.seconds:.3f}s:",
                 f"started {len(self.started)}, stopped {len(self.stopped)}"]
        if self.failed:
            parts.append(f", failed {len(self.failed)} ({'; '.join(self.failed)})")
        if self.left_alone:
            parts.append(f", left alone {len(self.left_alone)}")
        return " ".join(parts)


def reconcile(ctx: NodeContext, may_start: Callable[[VM], str] | None = None) -> Result:
    """Start what should run here, stop what should not. may_start(vm) returns why a VM
    must not be started now ("" to start it): the daemon's crash-loop guard."""
    t0 = time.perf_counter()
    vms = ctx.cluster.vms()
    running = ctx.hv.running()
    decision = decide(ctx.name, vms, running, set(ctx.cluster.busy()))
    result = Result(vms=len(vms), left_alone=decision.left_alone)
    if may_start is not None:
        held = {vm.uuid: may_start(vm) for vm in decision.start}
        result.left_alone += [f"{vm.name} ({held[vm.uuid]})" for vm in decision.start
                              if held[vm.uuid]]
        result.unresolved.update({vm.uuid: (vm.name, f"should run here: {held[vm.uuid]}")
                                  for vm in decision.start if held[vm.uuid]})
        decision.start = [vm for vm in decision.start if not held[vm.uuid]]

    xmls = ctx.store.iter_many(ctx.schema.vm_xml(vm.uuid) for vm in decision.start)
    n = ctx.config.node

    def start(vm: VM, xml: bytes | None) -> None:
        try:
            if xml is None:
                raise PvcError("no stored XML")
            ctx.hv.start(domxml.for_node(xml.decode(), n.domain_type, n.console_log_directory),
                         vm.uuid)
            result.started.append(vm.name)
            result.started_uuids.append(vm.uuid)
        except PvcError as e:
            result.failed.append(f"{vm.name}: {e}")
            result.unresolved[vm.uuid] = (vm.name, f"should run here, start failed: {e}")

    def stop(uuid: str, name: str, why: str) -> None:
        try:
            ctx.hv.destroy(uuid)
            result.stopped.append(f"{name} ({why})")
        except PvcError as e:
            result.failed.append(f"{name}: {e}")
            result.unresolved[uuid] = (name, f"should not run here ({why}), stop failed: {e}")

    # libvirt's RPC overlaps calls from several threads on one connection; starts begin as
    # soon as each VM's XML arrived, while the others are still on their way.
    with ThreadPoolExecutor(max_workers=PARALLEL_LIBVIRT_CALLS) as pool:
        jobs = [pool.submit(start, vm, xml) for vm, xml in zip(decision.start, xmls)]
        jobs += [pool.submit(stop, *s) for s in decision.stop]
        for job in jobs:
            job.result()
    result.started.sort()
    result.stopped.sort()

    if decision.start or decision.stop:
        running = ctx.hv.running()
    ctx.publish_domains(running)
    ctx.publish_resources(vms, running)
    result.seconds = time.perf_counter() - t0
    return result
