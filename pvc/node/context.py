"""A node's view of itself: its config, the cluster, its hypervisor, and the observed state it
publishes (running domains, resources). Shared by the node daemon and the node's worker."""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.core.errors import ConfigError
from pvc.core.models import VM, Node
from pvc.core.schema import Schema
from pvc.core.store import (
    KEEP,
    NodeExists,
    SessionEvent,
    Store,
    Transaction,
    Versioned,
    decode_json,
)
from pvc.hypervisor.base import Hypervisor, HypervisorFactory, RunningDomain
from pvc.vm import domxml

log = logging.getLogger(__name__)


def connect_libvirt(uri: str) -> Hypervisor:
    """The production hypervisor: libvirt is loaded only when a node connects (the CLI
    imports this module's neighbours, never libvirt)."""
    from pvc.hypervisor.adapter import connect
    return connect(uri)


class ObservedDomains:
    """What each node publishes it runs, kept current by one watch per node and shared by
    every thread of this process that waits for a change (a flush's parallel moves)."""

    def __init__(self, store: Store, schema: Schema) -> None:
        self.store = store
        self.schema = schema
        self._cond = threading.Condition()
        self._domains: dict[str, set[str]] = {}
        self._watched: set[str] = set()

    def _watch(self, node: str) -> None:
        with self._cond:
            if node in self._watched:
                return
            self._watched.add(node)

        def on_change(data: bytes | None, _version: int | None) -> None:
            with self._cond:
                self._domains[node] = set(decode_json(data) or {})
                self._cond.notify_all()

        self.store.watch_raw(self.schema.node_field(node, "domains"), on_change)

    def wait(self, node: str, uuid: str, present: bool, timeout: float) -> bool:
        """Until node publishes uuid as running (present) or not; False on timeout."""
        self._watch(node)
        with self._cond:
            return self._cond.wait_for(
                lambda: node in self._domains and (uuid in self._domains[node]) == present,
                timeout)


class NodeContext:
    def __init__(self, config: Config, cluster: Cluster | None = None,
                 hypervisors: HypervisorFactory | None = None) -> None:
        if not config.is_node:
            raise ConfigError(f"{config.source or 'configuration'}: node.name is not set; "
                              "this is a client configuration")
        self.config = config
        self.name = config.node.name
        self.cluster = cluster or Cluster.connect(config, patient=True)
        self._connect_hv = hypervisors or connect_libvirt
        self._hv: Hypervisor | None = None
        self._hv_lock = threading.Lock()
        self._remote: dict[str, Hypervisor] = {}
        self._published: Versioned | None = None
        self.observed = ObservedDomains(self.cluster.store, self.cluster.schema)

    @property
    def store(self) -> Store:
        return self.cluster.store

    @property
    def schema(self) -> Schema:
        return self.cluster.schema

    @property
    def hv(self) -> Hypervisor:
        with self._hv_lock:
            if self._hv is None:
                self._hv = self._connect_hv(self.config.node.libvirt_uri)
            return self._hv

    def register_worker(self) -> None:
        """Say this worker process is alive (ephemeral: gone when the process dies), so a
        request for this node fails at once instead of waiting in a queue nobody reads.
        Registered again whenever the ZooKeeper session was lost and renewed."""
        self._register_worker()
        self.store.on_session(lambda event: self._register_worker()
                              if event == SessionEvent.NEW_SESSION else None)

    def _register_worker(self) -> None:
        # named for its session too: after an expiry, the old session's znode may still be
        # there (the servers delete it when they get to it), and taking it for this one's
        # would leave the worker unregistered once it goes
        worker = f"{os.uname().nodename}:{os.getpid()}:{self.store.session_id}"
        self.store.ensure(self.schema.node_workers(self.name))
        try:
            self.store.create(self.schema.node_worker(self.name, worker), "", ephemeral=True)
        except NodeExists:
            pass

    def hypervisor_for(self, node: Node) -> Hypervisor:
        """This node's hypervisor, or another node's through its migration URI."""
        if node.name == self.name:
            return self.hv
        uri = node.migration_uri or node.libvirt_uri
        with self._hv_lock:
            if uri not in self._remote:
                self._remote[uri] = self._connect_hv(uri)
            return self._remote[uri]

    def close(self) -> None:
        for hv in [self._hv, *self._remote.values()]:
            if hv is not None:
                hv.close()
        self.cluster.close()

    # ------------------------------------------------------------------ XML for this node
    def node_xml(self, uuid: str) -> str:
        n = self.config.node
        return domxml.for_node(self.cluster.vm_xml(uuid), n.domain_type, n.console_log_directory)

    # ------------------------------------------------------------------ observed state
    def publish_domains(self, running: dict[str, RunningDomain] | None = None) -> dict[str, Any]:
        """Write what the hypervisor runs to /nodes/N/domains. The listing is taken after
        the znode's version is known and written with that version: a concurrent writer that
        saw a newer libvirt state makes this write fail and list again, so a stale list never
        wins. Starts from what this process wrote last (no read in the common case)."""
        given = [running] if running is not None else []

        def listing(current: Any, _tx: Transaction) -> Any:
            found = given.pop() if given else self.hv.running()   # a retry lists again
            value = {u: {"name": d.name, "state": d.state} for u, d in found.items()}
            return KEEP if value == current else value

        self._published = self.store.update(self.schema.node_field(self.name, "domains"),
                                            listing, missing=None, known=self._published)
        return dict(self._published.value)

    def resources(self, vms: list[VM], running: dict[str, RunningDomain]) -> dict[str, Any]:
        """Memory and CPU figures: allocated from the running domains, provisioned from the
        VMs the cluster assigns here."""
        host = self.hv.host_info()
        by_uuid = {vm.uuid: vm for vm in vms}
        mem_alloc = vcpus = 0
        for uuid in running:
            vm = by_uuid.get(uuid)
            mem, cpus = (vm.memory, vm.vcpus) if vm else self.hv.domain_size(uuid)
            mem_alloc += mem
            vcpus += cpus
        provisioned = sum(vm.memory for vm in vms if vm.node == self.name)
        return {"mem_total": host.mem_total_mib, "mem_free": host.mem_free_mib,
                "mem_allocated": mem_alloc, "mem_provisioned": provisioned,
                "vcpus_allocated": vcpus, "cpus": host.cpus, "load": round(os.getloadavg()[0], 2),
                "vms": len(running), "updated": round(time.time(), 3)}

    def publish_resources(self, vms: list[VM] | None = None,
                          running: dict[str, RunningDomain] | None = None) -> dict[str, Any]:
        vms = self.cluster.vms() if vms is None else vms
        running = self.hv.running() if running is None else running
        res = self.resources(vms, running)
        self.store.put(self.schema.node_field(self.name, "resources"), res)
        return res

    def refresh(self) -> None:
        """After acting on the hypervisor: publish domains and resources."""
        running = self.hv.running()
        self.publish_domains(running)
        self.publish_resources(running=running)

