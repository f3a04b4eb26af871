"""Defining and undefining VMs: the stored definition the cluster starts VMs from."""
from __future__ import annotations

import time
from typing import Iterable

from pvc.core import names as pvc_names
from pvc.core import states
from pvc.core.cluster import Cluster
from pvc.core.config import MIGRATION_METHODS, SELECTORS
from pvc.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from pvc.core.models import VM
from pvc.core.store import NodeExists, NoNode
from pvc.network import managed
from pvc.vm import disks, domxml

TX_BYTES = 512 * 1024   # a transaction of new VMs (their XML above all) stays well below
                        # ZooKeeper's 1 MiB request limit


def define(cluster: Cluster, xml: str, node: str = "", autostart: bool = False, selector: str = "",
           node_limit: Iterable[str] = (), migration_method: str = "",
           initial_state: str = "stop", allow_unknown_nodes: bool = False) -> VM:
    """Store a new VM. It starts stopped; `initial_state="start"` (with a node) lets that
    node's daemon start it at its next reconcile, as the sandbox does for demo VMs (before
    its nodes first registered: `allow_unknown_nodes`)."""
    return define_many(cluster, [("", xml)], node, autostart, selector, node_limit,
                       migration_method, initial_state, allow_unknown_nodes)[0]


def define_many(cluster: Cluster, sources: list[tuple[str, str]], node: str = "",
                autostart: bool = False, selector: str = "", node_limit: Iterable[str] = (),
                migration_method: str = "", initial_state: str = "stop",
                allow_unknown_nodes: bool = False) -> list[VM]:
    """Store new VMs from (label, XML) pairs, all with the same options. Every definition is
    checked first, against one read of the cluster and against each other (a refusal names
    its label, and nothing is stored); then they are stored, as many to a transaction as
    TX_BYTES holds."""
    node_limit = [n for n in node_limit if n]
    check_choices(selector, migration_method)
    if not allow_unknown_nodes:
        require_known_nodes(cluster, [node, *node_limit])
    if node and node_limit and node not in node_limit:
        raise InvalidInput(f"node {node} is not in the VM's node limit {','.join(node_limit)}")
    known = _Known(cluster)
    prepared = []
    for label, xml in sources:
        try:
            facts, stored_xml = domxml.parse(xml)
            stored_xml, volumes = disks.prepare(stored_xml, cluster.config.cluster.storage)
            known.refuse_taken(facts.name, facts.uuid, volumes)
            known.refuse_too_large(facts)
            vm = VM(uuid=facts.uuid, name=facts.name, memory=facts.memory_mib,
                    vcpus=facts.vcpus, state=initial_state, node=node, autostart=autostart,
                    migration_method=migration_method, node_selector=selector,
                    node_limit=node_limit, console_log=facts.console_log is not None,
                    defined=time.time(), networks=managed_networks(cluster, facts, known),
                    volumes=volumes)
        except (InvalidInput, Conflict, NotFound) as e:
            raise type(e)(f"{label}: {e}" if label else str(e)) from None
        known.add(vm)
        prepared.append((vm, stored_xml))
    batch: list[tuple[VM, str]] = []
    stored = size = 0
    for vm, stored_xml in prepared:
        if batch and size + len(stored_xml) > TX_BYTES:
            _store(cluster, batch, stored, len(prepared))
            stored, batch, size = stored + len(batch), [], 0
        batch.append((vm, stored_xml))
        size += len(stored_xml) + 1024   # its record, name and markers
    _store(cluster, batch, stored, len(prepared))
    return [vm for vm, _ in prepared]


def _store(cluster: Cluster, batch: list[tuple[VM, str]], before: int, total: int) -> None:
    """One transaction for a batch of new VMs (each: its name, record, XML, network uses)."""
    tx = cluster.store.transaction()
    for vm, stored_xml in batch:
        tx.create(cluster.schema.vm_name(vm.name), vm.uuid,
                  refuse={NodeExists: Conflict(f"a VM named {vm.name!r} already exists")})
        tx.create(cluster.schema.vm(vm.uuid), vm.to_json(),
                  refuse={NodeExists: Conflict(f"a VM with UUID {vm.uuid} already exists")})
        tx.create(cluster.schema.vm_xml(vm.uuid), stored_xml)
        for vni in vm.networks:   # the network cannot go while this VM is on it
            tx.create(cluster.schema.network_user(vni, vm.uuid), refuse={NoNode: NotFound(
                f"network {vni}, which VM {vm.name}'s interfaces name, was removed meanwhile")})
    try:
        tx.commit(refuse={NoNode: Unavailable("the cluster's state is not initialised (no "
                                              "VMs section); start a node daemon first")})
    except (Conflict, NotFound) as e:
        done = f"{before} of {total} VMs were defined before it; " if before else ""
        raise type(e)(f"{e} ({done}nothing more was defined)" if total > 1 else str(e)) \
            from None


class _Known:
    """What new definitions are checked against, read once for a batch and grown by each of
    its VMs as it passes: the VMs' names and UUIDs, the disks in use, the nodes' sizes, the
    managed networks."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.names = {n.casefold(): n for n in cluster.store.children(cluster.schema.vm_names)}
        self.uuids = set(cluster.store.children(cluster.schema.vms))
        self._disks: dict[str, str] | None = None     # volume -> the VM it is a disk of
        self._largest: int | None = None
        self.networks: dict[int, bool] = {}

    def refuse_taken(self, name: str, uuid: str, volumes: list[str]) -> None:
        other = self.names.get(name.casefold())
        if other == name:
            raise Conflict(f"a VM named {name!r} already exists")
        if other is not None:
            raise Conflict(f"a VM named {other!r} exists: {name!r} differs from it only in "
                           "case (DNS names ignore case)")
        if uuid in self.uuids:
            raise Conflict(f"a VM with UUID {uuid} already exists")
        for volume in volumes:
            if volume in self.disks():
                raise Conflict(f"volume {volume} is already a disk of VM "
                               f"{self.disks()[volume]}")

    def refuse_too_large(self, facts: domxml.DomainFacts) -> None:
        if self._largest is None:
            sizes = [n.mem_total for n in self.cluster.nodes()
                     if n.enable_hypervisor and n.mem_total]
            self._largest = max(sizes, default=0)
        if self._largest and facts.memory_mib > self._largest:
            raise InvalidInput(f"VM {facts.name} needs {facts.memory_mib} MiB of memory; the "
                               f"largest node has {self._largest} MiB")

    def disks(self) -> dict[str, str]:
        if self._disks is None:
            self._disks = {v: vm.name for vm in self.cluster.vms() for v in vm.volumes}
        return self._disks

    def add(self, vm: VM) -> None:
        self.names[vm.name.casefold()] = vm.name
        self.uuids.add(vm.uuid)
        if vm.volumes:
            self.disks().update({v: vm.name for v in vm.volumes})


def undefine(cluster: Cluster, ref: str) -> VM:
    current = cluster.vm(ref)
    vm: VM = current.value
    busy = cluster.vm_operation(vm.uuid)
    if busy:
        raise Conflict(f"VM {vm.name} is busy with operation {busy}")
    running = cluster.running_on(vm.uuid)
    if running:
        raise Conflict(f"VM {vm.name} is running on {', '.join(running)}: stop it first")
    if vm.state == states.VmState.START:
        raise Conflict(f"VM {vm.name} is set to start: stop it first")
    tx = cluster.store.transaction()
    for child in cluster.store.children(cluster.schema.vm(vm.uuid)):
        tx.delete(f"{cluster.schema.vm(vm.uuid)}/{child}")
    tx.delete(cluster.schema.vm(vm.uuid), current.version)
    tx.delete(cluster.schema.vm_name(vm.name))
    for vni in vm.networks:
        if cluster.store.exists(cluster.schema.network_user(vni, vm.uuid)):
            tx.delete(cluster.schema.network_user(vni, vm.uuid))
    tx.commit(refuse={NoNode: NotFound(f"VM {vm.name} was undefined meanwhile"),
                      Conflict: Conflict(f"VM {vm.name} changed while undefining it; try "
                                         "again")})
    return vm



def undefine_with_volumes(cluster: Cluster, ref: str,
                          delete_volumes: bool) -> tuple[VM, list[str]]:
    """Undefine a VM and, if asked, remove its volumes (Ceph is reached first: a storage that
    does not answer leaves the VM defined)."""
    if not delete_volumes or not cluster.vm(ref).value.volumes:
        return undefine(cluster, ref), []
    with disks.connect(cluster.config.cluster.storage) as ceph:
        gone = undefine(cluster, ref)
        for volume in gone.volumes:
            ceph.volume_remove(*volume.split("/", 1))
    return gone, list(gone.volumes)


def managed_networks(cluster: Cluster, facts: domxml.DomainFacts,
                     known: _Known | None = None) -> list[int]:
    """The managed networks the VM's bridges stand for; each must exist (known: a batch's
    answers, asked once per network)."""
    seen = known.networks if known is not None else {}
    vnis = [v for b in facts.bridges if (v := managed.vni_of_bridge(b)) is not None]
    for vni in vnis:
        if vni not in seen:
            seen[vni] = cluster.store.exists(cluster.schema.network(vni))
        if not seen[vni]:
            raise NotFound(f"the VM's interface is on bridge {managed.BRIDGE_PREFIX}{vni}, but "
                           f"there is no managed network {vni} (pvc network add {vni} …)")
    return vnis


def refuse_shared_volumes(cluster: Cluster, uuid: str, volumes: Iterable[str]) -> None:
    """One writer per disk: a volume is the disk of one VM only."""
    wanted = set(volumes)
    if not wanted:
        return
    for other in cluster.vms():
        shared = wanted & set(other.volumes)
        if shared and other.uuid != uuid:
            raise Conflict(f"volume {', '.join(sorted(shared))} is already a disk of VM "
                           f"{other.name}")


def refuse_case_twin(cluster: Cluster, name: str, renamed_from: str = "") -> None:
    """Refuse a name another VM's differs from only in case: DNS names ignore case, so the
    two would answer to one name on a managed network."""
    folded = name.casefold()
    for other in cluster.store.children(cluster.schema.vm_names):
        if other not in (name, renamed_from) and other.casefold() == folded:
            raise Conflict(f"a VM named {other!r} exists: {name!r} differs from it only in case "
                           "(DNS names ignore case)")


def require_known_nodes(cluster: Cluster, names: Iterable[str]) -> None:
    """Refuse node names the cluster does not have ("" stands for none)."""
    given = [pvc_names.check("node", n) for n in names if n]   # no control character shown
    known = set(cluster.node_names())
    unknown = sorted({n for n in given if n not in known})
    if unknown:
        raise NotFound(f"unknown node(s): {', '.join(unknown)}")


def fits_somewhere(cluster: Cluster, facts: domxml.DomainFacts) -> None:
    """Refuse a VM no node could ever host (once nodes have registered)."""
    nodes = [n for n in cluster.nodes() if n.enable_hypervisor and n.mem_total]
    if nodes and facts.memory_mib > max(n.mem_total for n in nodes):
        raise InvalidInput(f"VM {facts.name} needs {facts.memory_mib} MiB of memory; the "
                           f"largest node has {max(n.mem_total for n in nodes)} MiB")


def check_choices(selector: str, method: str) -> None:
    if selector and selector not in SELECTORS:
        raise InvalidInput(f"unknown selector {selector!r} (one of {', '.join(SELECTORS)})")
    if method and method not in MIGRATION_METHODS:
        raise InvalidInput(f"unknown migration method {method!r}")
