"""Reading and writing the cluster's objects (VMs, nodes, operation records) in ZooKeeper."""
from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any

from pvc.core import health, names, states
from pvc.core.config import Config
from pvc.core.errors import Conflict, NotFound, SchemaTooNew
from pvc.core.models import VM, Node, Operation, VmView
from pvc.core.schema import NODE_FIELDS, VERSION, Schema
from pvc.core.store import NodeExists, NoNode, Store, VersionConflict, Versioned, decode_json
from pvc.core.zookeeper import ZkStore


class Cluster:
    def __init__(self, store: Store, schema: Schema, config: Config) -> None:
        self.store = store
        self.schema = schema
        self.config = config

    @classmethod
    def connect(cls, config: Config, patient: bool = False) -> "Cluster":
        """patient: calls ride out a lost connection for as long as the session may still
        live (node processes, whose work must not fail on a short ZooKeeper pause); a CLI is
        not patient: it says at once that ZooKeeper does not answer."""
        zk = config.cluster.zookeeper
        timeout = zk.timeout + zk.session_timeout if patient else zk.timeout
        store = ZkStore(zk.hosts, timeout, zk.session_timeout, config.zookeeper_auth(),
                        zk.sasl).connect()
        cluster = cls(store, Schema(zk.root), config)
        try:
            cluster.ensure_schema()
        except Exception:
            store.close()
            raise
        return cluster

    def close(self, wait: float | None = None) -> None:
        """End the session; wait: at most this long (None: until it ended)."""
        self.store.close(wait)

    # ------------------------------------------------------------------ schema
    def ensure_schema(self) -> None:
        """Create the top-level znodes on first use; refuse a newer stored schema."""
        stored = self.store.get_text(self.schema.version)
        if stored is None:
            for path in self.schema.top_level():
                self.store.ensure(path)
            if not self.store.ensure(self.schema.version, str(VERSION)):
                stored = self.store.get_text(self.schema.version)
        if stored is not None and int(stored) > VERSION:
            raise SchemaTooNew(f"the cluster state has schema version {stored}, this pvc "
                               f"understands up to {VERSION}: upgrade pvc")

    # ------------------------------------------------------------------ VMs
    def vm_uuid(self, ref: str) -> str:
        """A VM's UUID from its name or UUID."""
        uuid = _as_uuid(ref)
        if uuid is None:
            found = self.store.get_text(self.schema.vm_name(names.check("VM", ref)))
            if found is None:
                raise NotFound(f"no VM named {ref!r}")
            return found
        if self.store.exists(self.schema.vm(uuid)):
            return uuid
        raise NotFound(f"no VM with UUID {uuid}")

    def vm(self, ref: str) -> Versioned:
        """The VM record (value: VM) and its znode version, by name or UUID."""
        uuid = _as_uuid(ref)
        if uuid is None:
            uuid = self.vm_uuid(ref)
        try:
            v = self.store.get_json_versioned(self.schema.vm(uuid))
        except NoNode:
            raise NotFound(f"no VM with UUID {uuid}" if uuid == ref.lower() else
                           f"VM {ref!r} was just removed") from None
        return Versioned(VM.from_json(v.value), v.version)

    def vms(self) -> list[VM]:
        uuids = self.store.children(self.schema.vms)
        records = self.store.get_json_many(self.schema.vm(u) for u in uuids)
        return [VM.from_json(r) for r in records if r]

    def vms_versioned(self) -> list[Versioned]:
        """Every VM record (value: VM) with its znode version: for a change to many VMs."""
        uuids = self.store.children(self.schema.vms)
        found = self.store.get_json_many_versioned(self.schema.vm(u) for u in uuids)
        return [Versioned(VM.from_json(v.value), v.version) for v in found if v and v.value]

    def vm_xml(self, uuid: str) -> str:
        text = self.store.get_text(self.schema.vm_xml(uuid))
        if text is None:
            raise NotFound(f"VM {uuid} has no stored XML")
        return text

    def vm_operation(self, uuid: str) -> str | None:
        """The id of the operation changing this VM now, if any."""
        return self.store.get_text(self.schema.vm_operation(uuid))

    def busy(self) -> dict[str, str]:
        """Every VM with an operation in flight: {uuid: operation id}."""
        uuids = self.store.children(self.schema.vm_operations)
        ids = self.store.get_many(self.schema.vm_operation(u) for u in uuids)
        return {u: i.decode() for u, i in zip(uuids, ids) if i is not None}

    def release_vms_of(self, op_id: str) -> None:
        """Free every VM an operation marked busy (also those an earlier attempt of it, on a
        worker that died, claimed)."""
        for uuid, holder in self.busy().items():
            if holder == op_id:
                try:
                    self.store.delete(self.schema.vm_operation(uuid))
                except NoNode:
                    pass

    # ------------------------------------------------------------------ observed VM state
    def running_on(self, uuid: str, nodes: list[Node] | None = None) -> list[str]:
        nodes = self.nodes() if nodes is None else nodes
        return [n.name for n in nodes if uuid in n.domains]

    def views(self, vms: list[VM], nodes: list[Node] | None = None) -> list[VmView]:
        nodes = self.nodes() if nodes is None else nodes
        busy = self.busy()
        out = []
        for vm in vms:
            where = [n for n in nodes if vm.uuid in n.domains]
            observed = where[0].domains[vm.uuid].get("state", "running") if where else "stopped"
            out.append(VmView(vm, [n.name for n in where], observed, busy.get(vm.uuid, "")))
        return out

    def unknown_domains(self, nodes: list[Node] | None = None) -> list[dict[str, str]]:
        """Domains the nodes run that are not pvc VMs (left alone by pvc; listed so they are
        not invisible): name, uuid, node, state."""
        nodes = self.nodes() if nodes is None else nodes
        known = set(self.store.children(self.schema.vms))
        return [{"name": d.get("name", uuid), "uuid": uuid, "node": n.name,
                 "state": d.get("state", "")}
                for n in nodes for uuid, d in sorted(n.domains.items()) if uuid not in known]

    # ------------------------------------------------------------------ nodes
    def node_names(self) -> list[str]:
        return self.store.children(self.schema.nodes)

    def nodes(self, names: list[str] | None = None) -> list[Node]:
        names = self.node_names() if names is None else names
        per_node = ["", "alive", *NODE_FIELDS]
        paths = []
        for name in names:
            for f in per_node:
                if f == "":
                    paths.append(self.schema.node(name))
                elif f == "alive":
                    paths.append(self.schema.node_alive(name))
                else:
                    paths.append(self.schema.node_field(name, f))
        raw = self.store.get_many(paths)
        workers = self.store.child_counts(self.schema.node_workers(n) for n in names)
        nodes = []
        for i, name in enumerate(names):
            chunk = dict(zip(per_node, raw[i * len(per_node):(i + 1) * len(per_node)]))
            if chunk[""] is None:
                continue
            node = _node_from_raw(name, chunk)
            node.workers = workers[i]
            nodes.append(node)
        return nodes

    def set_node_state(self, node: str, field: str, new: str) -> None:
        """The one writer of a node's daemon, domain and coordinator states: the move is
        checked against its transition table (states.NODE_STATE_TABLES) inside the
        compare-and-set, so a state is never written blind over one it may not follow."""
        path = self.schema.node_field(node, field)
        for _ in range(20):
            try:
                stored = self.store.get(path)
                current, version = stored.value.decode() or None, stored.version
            except NoNode:
                current, version = None, -1
            states.node_transition(node, field, current, new)
            try:
                if version < 0:
                    self.store.create(path, str(new), makepath=True)
                else:
                    self.store.set(path, str(new), version)
                return
            except (NodeExists, VersionConflict):
                continue   # written meanwhile: check the move against what is there now
        raise Conflict(f"node {node}: its {field.replace('_', ' ')} kept changing")

    def set_fence(self, node: str, new: states.FenceState, **fields: Any) -> None:
        """The one writer of a node's fence record, its move checked against
        states.FENCE_TRANSITIONS inside the compare-and-set ({} when none)."""
        def change(record: dict[str, Any] | None, _tx: Any) -> dict[str, Any]:
            current = None if record is None else record.get("state", states.FenceState.NONE)
            states.node_transition(node, "fence", current, new)
            return {} if new == states.FenceState.NONE else {"state": str(new), **fields}

        self.store.update(self.schema.node_field(node, "fence"), change, missing=None)

    def node(self, name: str) -> Node:
        found = self.nodes([names.check("node", name)])
        if not found:
            raise NotFound(f"no node named {name!r}")
        return found[0]

    def maintenance(self) -> dict[str, Any] | None:
        """Who put the cluster in maintenance, why and since when; None when it is not."""
        return self.store.get_json(self.schema.maintenance, None)  # type: ignore[no-any-return]

    def cluster_shutdown(self) -> dict[str, Any] | None:
        """The whole-cluster shutdown under way (who, why, since), or None."""
        return self.store.get_json(  # type: ignore[no-any-return]
            self.schema.cluster_shutdown, None)

    # ------------------------------------------------------------------ operations
    def operation(self, op_id: str) -> Operation:
        names.check("operation", op_id, names.OPERATION_ID)
        data = self.store.get_json(self.schema.operation(op_id), None)
        if data is None:
            raise NotFound(f"no operation {op_id!r}")
        return Operation.from_json(data)

    def health(self) -> tuple[list[str], dict[str, Any]]:
        """(reasons the cluster is degraded, the snapshot's parts for a status display)."""
        nodes = self.nodes()
        vms = self.vms()
        ops = self.operations()
        active = [o.id for o in ops if o.state not in states.OP_TERMINAL]
        leases = self.store.child_counts(self.schema.operation(i) for i in active)
        snap = health.Snapshot(nodes, vms, ops, self.busy(),
                               {i for i, n in zip(active, leases) if n}, time.time())
        opc = self.config.cluster.operations
        return (health.reasons(snap, opc.lost_after, opc.drift_grace),
                {"nodes": nodes, "vms": vms, "operations": ops})

    def operations(self, limit: int | None = None) -> list[Operation]:
        ids = self.store.children(self.schema.operations)
        records = [Operation.from_json(r) for r in
                   self.store.get_json_many(self.schema.operation(i) for i in ids) if r]
        records.sort(key=lambda o: o.created, reverse=True)
        return records[:limit] if limit else records


def _as_uuid(ref: str) -> str | None:
    """ref as a canonical UUID, or None if it is a name (names cannot look like UUIDs)."""
    try:
        return str(uuidlib.UUID(ref)) if len(ref) in (32, 36) else None
    except ValueError:
        return None


def _node_from_raw(name: str, raw: dict[str, bytes | None]) -> Node:
    static = decode_json(raw[""]) or {}
    resources = decode_json(raw["resources"]) or {}
    text = {k: (raw[k] or b"").decode() for k in ("daemon_state", "domain_state",
                                                    "coordinator_state", "keepalive")}
    node = Node(
        name=name,
        daemon_state=states.daemon_state(text["daemon_state"] or None, raw["alive"] is not None),
        domain_state=states.stored(states.DomainState, text["domain_state"],
                                   states.DomainState.READY),
        coordinator_state=states.stored(states.CoordinatorState, text["coordinator_state"],
                                        states.CoordinatorState.CLIENT),
        keepalive=float(text["keepalive"] or 0),
        domains=decode_json(raw["domains"]) or {},
        drift=decode_json(raw["drift"]) or {},
        fence=decode_json(raw["fence"]) or {},
        cordon=decode_json(raw["cordon"]) or {},
        bmc=decode_json(raw["bmc"]) or {},
        services=decode_json(raw["services"]) or {},
        loop=decode_json(raw["loop"]) or {},
    )
    for key, value in static.items():
        if hasattr(node, key) and key not in ("name", "domains", "drift", "fence", "cordon",
                                              "bmc", "services", "loop"):
            setattr(node, key, value)
    for key, value in resources.items():
        if hasattr(node, key) and key not in ("name", "domains", "drift"):
            setattr(node, key, value)
    node.vms = len(node.domains)   # published on every libvirt event, fresher than resources
    return node

