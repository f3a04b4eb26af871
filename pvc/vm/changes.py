"""Changing a VM after define: its XML (`modify`), its placement metadata (`meta`), its name
(`rename`). Each is one transaction with its operation record (who, why, before and after);
no node acts on it. A changed XML takes effect at the VM's next start (the nodes start VMs from
the stored XML; a running domain keeps the definition it started with, also when it migrates).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from pvc.core import names, states
from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.models import VM, Operation
from pvc.core.store import NodeExists, NoNode, Transaction
from pvc.operations import records
from pvc.operations.requests import refuse_if_busy
from pvc.vm import definition, disks, domxml

MAX_DIFF_CHARS = 64 * 1024     # the record keeps the diff; the XML itself is at most 256 KiB
META_FIELDS = ("autostart", "node_selector", "node_limit", "migration_method")
XML_FACTS = ("memory", "vcpus", "console_log", "networks", "volumes")


@dataclass
class Change:
    vm: VM                 # as it is now
    op: Operation          # its record
    running_on: list[str]  # where it runs: an XML change waits for its next start


def xml_diff(old: str, new: str, name: str) -> str:
    """A unified diff of two definitions (what `modify` shows and records)."""
    lines = difflib.unified_diff(old.rstrip("\n").splitlines(keepends=False),
                                 new.rstrip("\n").splitlines(keepends=False),
                                 f"{name} (stored)", f"{name} (new)", lineterm="")
    return "".join(f"{line}\n" for line in lines)


def modify(cluster: Cluster, ref: str, xml: str, reason: str = "",
           dry_run: bool = False) -> Change:
    """Replace a VM's definition. Its name and UUID stay: a new XML without a <uuid> keeps the
    VM's; a different name or UUID is refused. dry_run: check and describe it (the record's
    diff), change nothing."""
    current = cluster.vm(ref)
    vm: VM = current.value
    facts, new_xml = domxml.parse(xml, uuid_if_missing=vm.uuid)
    new_xml, volumes = disks.prepare(new_xml, cluster.config.cluster.storage)
    if facts.uuid != vm.uuid:
        raise InvalidInput(f"the new XML's <uuid> {facts.uuid} is not VM {vm.name}'s "
                           f"({vm.uuid}): a modify cannot change a VM's UUID")
    if facts.name != vm.name:
        raise InvalidInput(f"the new XML's <name> is {facts.name!r}, not {vm.name!r}: rename "
                           f"a stopped VM with `pvc vm rename {vm.name} {facts.name}`")
    old_xml = cluster.vm_xml(vm.uuid)
    if new_xml == old_xml:
        raise InvalidInput(f"the new XML is the same as VM {vm.name}'s: nothing to change")
    refuse_if_busy(cluster, vm)
    definition.refuse_shared_volumes(cluster, vm.uuid, volumes)
    definition.fits_somewhere(cluster, facts)
    before = {k: getattr(vm, k) for k in XML_FACTS}
    old_networks = list(vm.networks)
    vm.memory, vm.vcpus = facts.memory_mib, facts.vcpus
    vm.console_log = facts.console_log is not None
    vm.networks = definition.managed_networks(cluster, facts)
    vm.volumes = volumes
    after = {k: getattr(vm, k) for k in XML_FACTS}
    running = cluster.running_on(vm.uuid)
    when = "at its next start" if running else "when it starts"
    op = records.recorded("vm.modify", vm.name, vm.uuid, reason,
                          f"{vm.name}'s definition changed; it takes effect {when}",
                          {"before": before, "after": after,
                           "diff": xml_diff(old_xml, new_xml, vm.name)[:MAX_DIFF_CHARS]})
    if dry_run:
        return Change(vm, op, running)
    tx = cluster.store.transaction()
    tx.set(cluster.schema.vm(vm.uuid), vm.to_json(), current.version)
    tx.set(cluster.schema.vm_xml(vm.uuid), new_xml)
    _network_users(cluster, tx, vm.uuid, old_networks, vm.networks)
    _commit(cluster, tx, vm, op)
    return Change(vm, op, running)


def meta(cluster: Cluster, ref: str, reason: str = "", **wanted: Any) -> Change:
    """Change a VM's placement metadata (autostart, node_selector, node_limit,
    migration_method; None leaves one as it is). Nothing moves now: the next placement or
    migration uses them."""
    unknown = set(wanted) - set(META_FIELDS)
    assert not unknown, unknown
    wanted = {k: v for k, v in wanted.items() if v is not None}
    if not wanted:
        raise InvalidInput("nothing to change: give --autostart/--no-autostart, --selector, "
                           "--node-limit or --migration-method")
    current = cluster.vm(ref)
    vm: VM = current.value
    if "node_limit" in wanted:
        wanted["node_limit"] = [n for n in wanted["node_limit"] if n]
        definition.require_known_nodes(cluster, wanted["node_limit"])
    definition.check_choices(wanted.get("node_selector", ""), wanted.get("migration_method", ""))
    refuse_if_busy(cluster, vm)
    before = {k: getattr(vm, k) for k in wanted}
    for key, value in wanted.items():
        setattr(vm, key, value)
    after = {k: getattr(vm, k) for k in wanted}
    changed = sorted(k for k in wanted if before[k] != after[k])
    running = cluster.running_on(vm.uuid)
    outside = [n for n in running if vm.node_limit and n not in vm.node_limit]
    message = (f"{vm.name}: {', '.join(changed)} changed" if changed else
               f"{vm.name}: already so, nothing changed")
    if outside:
        message += (f"; it runs on {', '.join(outside)}, outside its new node limit (it stays "
                    "until it is next moved or started)")
    op = records.recorded("vm.meta", vm.name, vm.uuid, reason, message,
                          {"before": before, "after": after})
    tx = cluster.store.transaction()
    tx.set(cluster.schema.vm(vm.uuid), vm.to_json(), current.version)
    _commit(cluster, tx, vm, op)
    return Change(vm, op, running)


def rename(cluster: Cluster, ref: str, new_name: str, reason: str = "") -> Change:
    """Give a stopped VM another name (its definition's <name> too)."""
    names.check("VM", new_name)
    if domxml.looks_like_uuid(new_name):
        raise InvalidInput(f"name {new_name!r} looks like a UUID; VMs are found by either")
    current = cluster.vm(ref)
    vm: VM = current.value
    old_name = vm.name
    if new_name == old_name:
        raise InvalidInput(f"VM {old_name} already has that name")
    refuse_if_busy(cluster, vm)
    running = cluster.running_on(vm.uuid)
    if running:
        raise Conflict(f"VM {old_name} runs on {', '.join(running)}: stop it first (a running "
                       "domain keeps the name it started with)")
    if vm.state == states.VmState.START:
        raise Conflict(f"VM {old_name} is set to start: stop it first")
    definition.refuse_case_twin(cluster, new_name, renamed_from=old_name)
    new_xml = domxml.renamed(cluster.vm_xml(vm.uuid), new_name)
    vm.name = new_name
    op = records.recorded("vm.rename", new_name, vm.uuid, reason,
                          f"{old_name} is now {new_name}",
                          {"before": {"name": old_name}, "after": {"name": new_name}})
    tx = cluster.store.transaction()
    tx.set(cluster.schema.vm(vm.uuid), vm.to_json(), current.version)
    tx.set(cluster.schema.vm_xml(vm.uuid), new_xml)
    tx.delete(cluster.schema.vm_name(old_name))
    tx.create(cluster.schema.vm_name(new_name), vm.uuid,
              refuse={NodeExists: Conflict(f"a VM named {new_name!r} already exists")})
    _commit(cluster, tx, vm, op)
    return Change(vm, op, [])


def _network_users(cluster: Cluster, tx: Transaction, uuid: str, old: list[int],
                   new: list[int]) -> None:
    """The VM's marks on the managed networks it is on (a network in use cannot go)."""
    for vni in set(new) - set(old):
        tx.create(cluster.schema.network_user(vni, uuid), refuse={NoNode: NotFound(
            f"network {vni}, which the VM's interfaces name, was removed meanwhile; nothing "
            "was changed")})
    for vni in set(old) - set(new):
        if cluster.store.exists(cluster.schema.network_user(vni, uuid)):
            tx.delete(cluster.schema.network_user(vni, uuid))


def _commit(cluster: Cluster, tx: Transaction, vm: VM, op: Operation) -> None:
    """The change and its record, in one transaction; a race refuses and changes nothing."""
    tx.create(cluster.schema.operation(op.id), op.to_json())
    tx.commit(refuse={
        NoNode: NotFound(f"VM {vm.name} was undefined meanwhile; nothing was changed"),
        Conflict: Conflict(f"VM {vm.name} changed meanwhile (another command won); nothing "
                           "was changed, try again")})
