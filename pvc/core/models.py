"""The cluster's objects as plain dataclasses, with their JSON form in ZooKeeper."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

from pvc.core.states import CoordinatorState, DaemonState, DomainState


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    names = _field_names(cls)
    return cls(**{k: v for k, v in data.items() if k in names})


def _flat_copy(obj: Any) -> dict[str, Any]:
    """A dataclass of plain values and lists of them as a dict: asdict's deep, recursive
    copy cost 60 µs per VM, most of listing a thousand."""
    return {k: list(v) if isinstance(v, list) else v for k, v in vars(obj).items()}


@dataclass
class VM:
    """A VM's record at /vms/UUID: the operator's desired state plus facts from its XML."""
    uuid: str
    name: str
    memory: int                      # MiB
    vcpus: int
    state: str = "stop"              # desired: start / stop / disable
    node: str = ""                   # where it should run ("" = not placed yet)
    last_node: str = ""              # where it came from (flush/migrate), to return to
    autostart: bool = False          # start it when its node is next unflushed
    migration_method: str = ""       # "" = cluster default
    node_selector: str = ""          # "" = cluster default
    node_limit: list[str] = field(default_factory=list)
    console_log: bool = False        # has a serial <log file>
    networks: list[int] = field(default_factory=list)   # managed networks it is on (VNIs)
    volumes: list[str] = field(default_factory=list)    # its disks on Ceph: POOL/VOLUME
    failure: str = ""                # the last operation's failure, cleared on success
    defined: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return _flat_copy(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VM":
        return _from_dict(cls, data)


@dataclass
class VmView:
    """A VM as shown to an operator: desired record + what the hypervisors report."""
    vm: VM
    running_on: list[str]            # nodes whose hypervisor runs it (normally 0 or 1)
    observed: str                    # running / stopped / paused / …
    operation: str = ""              # in-flight operation id

    def to_json(self) -> dict[str, Any]:
        d = self.vm.to_json()
        d["running_on"] = self.running_on
        d["observed"] = self.observed
        d["operation"] = self.operation
        return d


@dataclass
class Node:
    name: str
    daemon_state: DaemonState = DaemonState.DEAD
    workers: int = 0                 # live worker processes (ready to run its operations)
    domain_state: DomainState = DomainState.READY
    coordinator_state: CoordinatorState = CoordinatorState.CLIENT
    keepalive: float = 0.0
    keepalive_interval: float = 0.0  # its own (a node is dead after `fencing.intervals` of them)
    ipmi: dict[str, Any] = field(default_factory=dict)   # its BMC: host, port, user
    fence: dict[str, Any] = field(default_factory=dict)  # the last fence's state, error, time
    cordon: dict[str, Any] = field(default_factory=dict)  # by, reason, since: takes no new VMs
    bmc: dict[str, Any] = field(default_factory=dict)     # its BMC's audit: checked, problems
    services: dict[str, str] = field(default_factory=dict)   # what does not serve there, why
    loop: dict[str, Any] = field(default_factory=dict)   # its daemon's last loop: said, at
    enable_hypervisor: bool = True
    enable_networking: bool = False  # builds the managed networks' bridges
    enable_storage: bool = False     # reaches the cluster's Ceph (VMs with RBD disks)
    hypervisor: str = ""             # qemu / test
    live_migration: bool = False
    libvirt_uri: str = ""
    migration_uri: str = ""
    migration_address: str = ""
    cluster_address: str = ""        # on the cluster network (its Patroni member's address)
    domain_type: str = ""            # forced <domain type> of its guests ("" = as defined)
    console_log_directory: str = ""
    vms: int = 0                     # running domains
    mem_total: int = 0               # MiB
    mem_free: int = 0
    mem_allocated: int = 0           # memory of running VMs
    mem_provisioned: int = 0         # memory of all VMs assigned here
    vcpus_allocated: int = 0
    cpus: int = 0
    load: float = 0.0
    domains: dict[str, dict[str, Any]] = field(default_factory=dict)
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)   # what it could not fix

    def target_refusal(self) -> str:
        """Why this node cannot take VMs now ("" when it can): the one answer to that
        question."""
        if not self.enable_hypervisor:
            return "hypervisor disabled"
        if self.daemon_state != DaemonState.RUN:
            return f"daemon {self.daemon_state}"
        if self.domain_state != DomainState.READY:
            return str(self.domain_state)
        if self.cordon:
            return "cordoned"
        return ""

    def acting_refusal(self) -> str:
        """Why this node cannot run an operation from its queue now ("" when it can)."""
        if self.daemon_state != DaemonState.RUN:
            return f"is {self.daemon_state}"
        if self.workers == 0:
            return "has no running worker (pvc-worker)"
        return ""

    def is_target(self) -> bool:
        """May VMs be placed or migrated here? (target_refusal says why not)"""
        return not self.target_refusal()

    def to_json(self, with_domains: bool = False) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not with_domains:
            d.pop("domains")
        return d


@dataclass
class Operation:
    """The durable record of an operation at /operations/ID."""
    id: str
    kind: str                        # vm.start, node.flush, …
    target: str                      # VM or node name
    target_id: str                   # VM UUID or node name
    node: str                        # node whose queue runs it
    task: str                        # Celery task name
    requested_by: str = ""
    reason: str = ""
    state: str = "queued"
    created: float = 0.0
    started: float = 0.0
    finished: float = 0.0
    lock_acquired: float = 0.0       # flush/unflush: when it took the cluster flush lock
    lock_released: float = 0.0
    attempts: int = 0
    resends: int = 0                 # times the primary sent it again (its message was lost)
    cancel_requested: bool = False   # a running flush/unflush stops after the moves in flight
    worker: str = ""
    message: str = ""                # last progress line
    error: str = ""
    progress: dict[str, Any] = field(default_factory=dict)   # done, total, items{name: state}
    args: dict[str, Any] = field(default_factory=dict)
    history: list[list[Any]] = field(default_factory=list)   # [time, state, note]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Operation":
        return _from_dict(cls, data)
