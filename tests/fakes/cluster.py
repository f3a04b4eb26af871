"""A whole cluster in one process, on the in-memory store and hypervisors: the real node daemons
(registration, reconcile, publishing domains on lifecycle events) and the real operations, with
no server at all. Operations are run by calling their executors directly, as a worker would."""
from __future__ import annotations

import threading
from typing import Any

from pvc.core.cluster import Cluster
from pvc.core.config import ClusterConfig, Config, MigrationConfig, NodeConfig, OperationsConfig
from pvc.core.errors import PvcError
from pvc.core.models import VM
from pvc.core.schema import Schema
from pvc.node import executors
from pvc.node.context import NodeContext
from pvc.node.daemon import NodeDaemon
from pvc.operations.requests import Request
from pvc.vm import definition
from tests.fakes.hypervisor import World
from tests.fakes.store import MemoryBackend


def vm_xml(name: str, memory: int = 256) -> str:
    return (f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>{memory}</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>")


class FakeCluster:
    """Nodes hv1..hvN, each a daemon thread with its own session, hypervisor URI `fake://hvN`."""

    def __init__(self, nodes: int = 3, **migration: Any) -> None:
        self.backend = MemoryBackend()
        self.world = World()
        self.names = [f"hv{i}" for i in range(1, nodes + 1)]
        self.cluster_config = ClusterConfig(
            name="fake", coordinators=self.names[:3],
            migration=MigrationConfig(**{"timeout": 5.0, **migration}),
            operations=OperationsConfig(shutdown_timeout=1.0), handoff_delay=0.05)
        self.client = self.cluster()
        self.contexts: dict[str, NodeContext] = {}
        self.daemons: dict[str, NodeDaemon] = {}
        for name in self.names:
            self.start_node(name)

    def cluster(self, cfg: Config | None = None) -> Cluster:
        """A new session's view of the cluster (a CLI, a worker)."""
        c = Cluster(self.backend.session(), Schema("/pvc"),
                    cfg or Config(cluster=self.cluster_config))
        c.ensure_schema()
        return c

    def node_config(self, name: str) -> Config:
        node = NodeConfig(name=name, libvirt_uri=f"fake://{name}", keepalive_interval=60.0,
                          console_log_directory="/nonexistent")
        return Config(cluster=self.cluster_config, node=node)

    def context(self, name: str) -> NodeContext:
        """A worker's context on node `name` (its own session)."""
        cfg = self.node_config(name)
        ctx = NodeContext(cfg, cluster=self.cluster(cfg),
                          hypervisors=self.world.hypervisor)
        ctx.register_worker()
        return ctx

    def start_node(self, name: str) -> None:
        cfg = self.node_config(name)
        ctx = NodeContext(cfg, cluster=self.cluster(cfg),
                          hypervisors=self.world.hypervisor)
        daemon = NodeDaemon(cfg, ctx)
        daemon.start()
        threading.Thread(target=daemon.run, name=f"daemon-{name}", daemon=True).start()
        self.daemons[name] = daemon
        self.contexts[name] = self.context(name)

    def define(self, name: str, node: str, memory: int = 256, **kw: Any) -> VM:
        """A VM running on `node` (started by that node's hypervisor, as reconcile would)."""
        vm = definition.define(self.client, vm_xml(name, memory), node=node, initial_state="start", **kw)
        ctx = self.contexts[node]
        ctx.hv.start(ctx.node_xml(vm.uuid), vm.uuid)
        self.client.store.wait_for(self.client.schema.node_field(node, "domains"),
                                   lambda d: bool(d) and vm.uuid in d, 5)
        return vm

    def run(self, req: Request) -> dict[str, Any]:
        """Execute a request's operation on its node, as that node's worker would; return the
        ended record."""
        if req.submit:
            try:
                executors.run(self.contexts[req.op.node], req.op.kind, req.op.id, None)
            except PvcError:
                pass   # the record says how it failed (a worker leaves this to Celery)
        return self.record(req.op.id)

    def record(self, op_id: str) -> dict[str, Any]:
        return self.client.store.get_json(self.client.schema.operation(op_id))

    def runs_once(self, name: str) -> bool:
        return len(self.world.where(name)) == 1

    def settled(self) -> None:
        """Until every queued watch and libvirt event was delivered."""
        self.backend.quiesce()

    def domain_state(self, node: str) -> str:
        return self.client.node(node).domain_state

    def stop(self) -> None:
        for d in self.daemons.values():
            d.stop()
