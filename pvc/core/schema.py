"""The ZooKeeper schema: the only place that knows a znode path.

Three kinds of state are kept apart, each with one writer:

| znode                               | kind      | written by                                   |
|-------------------------------------|-----------|----------------------------------------------|
| /schema                             | meta      | first daemon or CLI that finds it missing    |
| /nodes/N                            | observed  | node N's daemon (static facts, capabilities) |
| /nodes/N/daemon_state               | observed  | node N's daemon: init / run / stop           |
| /nodes/N/alive                      | observed  | node N's daemon (ephemeral: its session)     |
| /nodes/N/workers/W                  | observed  | each worker process of node N (ephemeral)    |
| /nodes/N/domain_state               | desired   | daemon at first registration, flush/unflush  |
| /nodes/N/coordinator_state          | observed  | node N's daemon                              |
| /nodes/N/keepalive                  | observed  | node N's daemon (timestamp)                  |
| /nodes/N/resources                  | observed  | node N (daemon, and its worker after acting) |
| /nodes/N/domains                    | observed  | node N: {uuid: state} of domains it runs     |
| /nodes/N/drift                      | observed  | node N's daemon: VMs it should run (or stop) |
|                                     |           | and could not, {uuid: {name, why, since}}    |
| /nodes/N/vm_stats                   | observed  | node N's daemon: libvirt's figures of the    |
|                                     |           | VMs it runs (rate-bounded, pvc.observe)      |
| /nodes/N/log                        | observed  | node N's daemon, workers and tailer: their   |
|                                     |           | log lines, a buffer like a console's         |
| /nodes/N/tailer                     | observed  | node N's tailer: console bytes it wrote      |
| /vms/U                              | desired   | CLI (compare-and-set), operations            |
| /vms/U/xml                          | desired   | CLI (define)                                 |
| /vm_operations/U                    | in flight | CLI creates it with a VM operation (it stays |
|                                     |           | until the operation ends); a flush or        |
|                                     |           | unflush creates it ephemeral (it goes with   |
|                                     |           | the executor's session); the primary sweeps  |
|                                     |           | those of ended operations                    |
| /vms/U/console                      | observed  | the console tailer of the node running U     |
| /vm_names/NAME                      | desired   | CLI, in the same transaction as /vms/U       |
| /node_operations/N                  | in flight | like /vm_operations, for a node's flush or   |
|                                     |           | unflush (one at a time per node)             |
| /volume_operations/POOL:VOLUME      | in flight | like /node_operations, for a volume's upload |
| /operations/ID                      | in flight | CLI creates, the executing task updates      |
| /operations/ID/executor             | in flight | the executing task (ephemeral lease)         |
| /locks/flush                        | in flight | kazoo lock recipe (flush and unflush)        |
| /primary                            | observed  | coordinator daemons (ephemeral election)     |
| /maintenance                        | desired   | CLI (`cluster maintenance on`): who, why,    |
|                                     |           | since; absent when off                       |
| /nodes/N/cordon                     | desired   | CLI (`node cordon`): who, why, since; {} off |
| /counters/FAMILY                    | observed  | whoever counts an event (an operation that   |
|                                     |           | ended, a fence, an election): cumulative     |
|                                     |           | figures the metrics export                   |
| /handoff                            | in flight | a switchover: its operation creates it, the  |
|                                     |           | old and new primary's daemons advance its    |
|                                     |           | phase (pvc.coordinator.role.HANDOFF)         |

A daemon refuses to run against a stored schema version newer than `VERSION`.
"""
from __future__ import annotations

from dataclasses import dataclass

VERSION = 1

NODE_FIELDS = ("daemon_state", "domain_state", "coordinator_state", "keepalive", "resources",
               "domains", "drift", "fence", "cordon", "bmc", "services", "loop")
# Read apart from the node's record (Cluster.nodes reads NODE_FIELDS only): figures and logs.
NODE_FIGURES = ("vm_stats", "log", "tailer")


@dataclass(frozen=True)
class Schema:
    root: str = "/pvc"

    def _p(self, *parts: str) -> str:
        return "/".join((self.root.rstrip("/"),) + parts)

    # ---- meta
    @property
    def version(self) -> str:
        return self._p("schema")

    def top_level(self) -> list[str]:
        return [self.nodes, self.vms, self.vm_names, self.vm_operations, self.node_operations,
                self.volume_operations, self.operations, self.locks, self.networks,
                self.counters]

    # ---- nodes
    @property
    def nodes(self) -> str:
        return self._p("nodes")

    def node(self, name: str) -> str:
        return self._p("nodes", name)

    def node_field(self, name: str, fieldname: str) -> str:
        assert fieldname in NODE_FIELDS or fieldname in NODE_FIGURES, fieldname
        return self._p("nodes", name, fieldname)

    def node_alive(self, name: str) -> str:
        return self._p("nodes", name, "alive")

    def node_ipmi_secret(self, name: str) -> str:
        """The node's BMC password, for the primary that may have to fence it (readable only
        with the cluster's ZooKeeper identity, like everything under the root)."""
        return self._p("nodes", name, "ipmi_secret")

    @property
    def fence_lock(self) -> str:
        return self._p("locks", "fence")

    def node_workers(self, name: str) -> str:
        return self._p("nodes", name, "workers")

    def node_worker(self, name: str, worker: str) -> str:
        return self._p("nodes", name, "workers", worker)

    @property
    def primary(self) -> str:
        return self._p("primary")

    @property
    def handoff(self) -> str:
        return self._p("handoff")

    @property
    def maintenance(self) -> str:
        """Set while the cluster is in maintenance: nothing acts on its own."""
        return self._p("maintenance")

    @property
    def cluster_shutdown(self) -> str:
        """Set while the whole cluster is going down (nodes stop without moving VMs)."""
        return self._p("shutdown")

    # ---- managed networks
    @property
    def networks(self) -> str:
        return self._p("networks")

    def network(self, vni: int) -> str:
        return self._p("networks", str(vni))

    def network_users(self, vni: int) -> str:
        """A child per VM whose interface is on the network: the network cannot be removed
        while one exists (ZooKeeper refuses to delete a node with children)."""
        return self._p("networks", str(vni), "users")

    def network_user(self, vni: int, uuid: str) -> str:
        return self._p("networks", str(vni), "users", uuid)

    def network_leases(self, vni: int) -> str:
        return self._p("networks", str(vni), "leases")

    def network_lease(self, vni: int, mac: str) -> str:
        return self._p("networks", str(vni), "leases", mac)

    # ---- VMs
    @property
    def vms(self) -> str:
        return self._p("vms")

    def vm(self, uuid: str) -> str:
        return self._p("vms", uuid)

    def vm_xml(self, uuid: str) -> str:
        return self._p("vms", uuid, "xml")

    @property
    def vm_operations(self) -> str:
        return self._p("vm_operations")

    def vm_operation(self, uuid: str) -> str:
        return self._p("vm_operations", uuid)

    def vm_console(self, uuid: str) -> str:
        return self._p("vms", uuid, "console")

    @property
    def vm_names(self) -> str:
        return self._p("vm_names")

    def vm_name(self, name: str) -> str:
        return self._p("vm_names", name)

    @property
    def node_operations(self) -> str:
        return self._p("node_operations")

    def node_operation(self, name: str) -> str:
        return self._p("node_operations", name)

    @property
    def volume_operations(self) -> str:
        return self._p("volume_operations")

    def volume_operation(self, ref: str) -> str:
        """ref: POOL/VOLUME (a znode name has no slash: POOL:VOLUME)."""
        return self._p("volume_operations", ref.replace("/", ":"))

    # ---- operations and locks
    @property
    def operations(self) -> str:
        return self._p("operations")

    def operation(self, op_id: str) -> str:
        return self._p("operations", op_id)

    def operation_executor(self, op_id: str) -> str:
        return self._p("operations", op_id, "executor")

    @property
    def locks(self) -> str:
        return self._p("locks")

    # ---- metrics
    @property
    def counters(self) -> str:
        return self._p("counters")

    def counter(self, family: str) -> str:
        return self._p("counters", family)

    @property
    def flush_lock(self) -> str:
        return self._p("locks", "flush")
