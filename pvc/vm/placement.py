"""Choosing a node for a VM. Pure functions over Node and VM snapshots (no I/O).

A selector ranks the eligible nodes; `Plan` carries what is already planned in the same flush,
so several VMs placed in a row spread out instead of piling onto one node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from pvc.core.models import VM, Node


@dataclass
class Planned:
    memory: int = 0
    vcpus: int = 0
    vms: int = 0


@dataclass
class Plan:
    """VMs already assigned to targets in this round, by node name."""
    load: dict[str, Planned] = field(default_factory=dict)

    def add(self, node: str, vm: VM) -> None:
        p = self.load.setdefault(node, Planned())
        p.memory += vm.memory
        p.vcpus += vm.vcpus
        p.vms += 1

    def of(self, node: str) -> Planned:
        return self.load.get(node, Planned())


def free_memory(node: Node, plan: Plan) -> int:
    """Memory left for VMs: what the host has free and what is not yet given to VMs, less
    what this round already planned there."""
    by_allocation = node.mem_total - node.mem_allocated
    free = min(node.mem_free, by_allocation) if node.mem_free else by_allocation
    return free - plan.of(node.name).memory


# Each selector maps a node to a sort key: the smallest key wins.
Selector = Callable[[Node, Plan], tuple[float, ...]]

SELECTORS: dict[str, Selector] = {
    "mem": lambda n, p: (-free_memory(n, p),),
    "memprov": lambda n, p: (n.mem_provisioned + p.of(n.name).memory,),
    "load": lambda n, p: (n.load, p.of(n.name).vms),
    "vcpus": lambda n, p: (n.vcpus_allocated + p.of(n.name).vcpus,),
    "vms": lambda n, p: (n.vms + p.of(n.name).vms,),
}


def eligible(vm: VM, nodes: Iterable[Node], plan: Plan, exclude: Iterable[str] = ()) -> list[Node]:
    """Nodes that may take vm now: running, ready, hypervisor on, in the VM's node limit,
    with networking if the VM is on a managed network, not excluded (its current node), and
    with room for its memory."""
    excluded = set(exclude)
    return [n for n in nodes
            if n.is_target()
            and n.name not in excluded
            and (not vm.node_limit or n.name in vm.node_limit)
            and not lacks(vm, n)
            and free_memory(n, plan) >= vm.memory]


# What a VM needs of a node beyond room, and the refusal when the node has not got it.
NEEDS: tuple[tuple[Callable[[VM, Node], bool], Callable[[VM], str]], ...] = (
    (lambda vm, n: bool(vm.networks) and not n.enable_networking,
     lambda vm: f"networking disabled (the VM is on network {', '.join(map(str, vm.networks))})"),
    (lambda vm, n: bool(vm.volumes) and not n.enable_storage,
     lambda vm: f"storage disabled (the VM's disks are on Ceph: {', '.join(vm.volumes)})"),
)


def lacks(vm: VM, node: Node) -> str:
    """What vm needs that node has not ("" when it has all)."""
    return next((why(vm) for missing, why in NEEDS if missing(vm, node)), "")


def choose(vm: VM, nodes: Iterable[Node], default_selector: str, plan: Plan | None = None,
           exclude: Iterable[str] = ()) -> Node | None:
    """The best target for vm, or None when no node can take it."""
    plan = plan or Plan()
    selector = SELECTORS[vm.node_selector or default_selector]
    candidates = eligible(vm, nodes, plan, exclude)
    if not candidates:
        return None
    return min(candidates, key=lambda n: (selector(n, plan), n.name))


def why_none(vm: VM, nodes: Iterable[Node], plan: Plan, exclude: Iterable[str] = ()) -> str:
    """Explain, in one line, why choose() found no target."""
    reasons = []
    excluded = set(exclude)
    for n in nodes:
        if n.name in excluded:
            continue
        outside_limit = bool(vm.node_limit) and n.name not in vm.node_limit
        why = (n.target_refusal() or ("not in node limit" if outside_limit else "")
               or lacks(vm, n)
               or f"{free_memory(n, plan)} MiB free < {vm.memory} MiB")
        reasons.append(f"{n.name}: {why}")
    return "no eligible node (" + ("; ".join(reasons) or "no other nodes") + ")"
