"""What pvc needs from a node's hypervisor, whatever runs it.

`Hypervisor` is the interface; `pvc.hypervisor.adapter.LibvirtHypervisor` implements it over
libvirt (the only libvirt user) and `tests/fakes/hypervisor.py` in memory for the unit tier.
pvc runs guests as transient domains created from the XML stored in ZooKeeper, so a node keeps
no definitions of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

LifecycleCallback = Callable[[str, str, str], None]   # (uuid, name, event name)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Capabilities:
    kind: str             # "qemu" or "test"
    live_migration: bool  # can this hypervisor migrate a running guest?


@dataclass(frozen=True)
class HostInfo:
    mem_total_mib: int
    mem_free_mib: int
    cpus: int


@dataclass(frozen=True)
class MigrationStats:
    elapsed_ms: int


@dataclass(frozen=True)
class DomainStats:
    """A running domain's figures, cumulative since it started (None: not reported)."""
    cpu_seconds: float | None = None
    memory_bytes: int | None = None      # what the guest uses (resident, or balloon's view)
    block_read_bytes: int | None = None
    block_write_bytes: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None


@dataclass(frozen=True)
class RunningDomain:
    uuid: str
    name: str
    state: str


class Hypervisor(Protocol):
    """One node's hypervisor. Every method raises HypervisorError when the hypervisor refuses
    or fails, Unavailable when it cannot be reached."""

    uri: str

    def close(self) -> None: ...

    def define_secret(self, uuid: str, usage: str, value: bytes) -> None:
        """A private, persistent secret (a Ceph key QEMU opens disks with), the same UUID on
        every node; defined again with the current value when it exists."""
        ...

    # facts
    def capabilities(self) -> Capabilities: ...

    def host_info(self) -> HostInfo: ...

    def running(self) -> dict[str, RunningDomain]:
        """Every active domain, by UUID, in one call."""

    def domain_stats(self) -> dict[str, DomainStats]:
        """Every active domain's figures, by UUID, in one call."""

    def domain_size(self, uuid: str) -> tuple[int, int]:
        """(memory MiB, vCPUs) of a running domain pvc does not know."""

    def is_running(self, uuid: str) -> bool: ...

    # actions
    def start(self, xml: str, uuid: str) -> bool:
        """Run the domain from xml; False if it was already running."""

    def destroy(self, uuid: str) -> bool:
        """Hard power-off; False if it was not running."""

    def shutdown(self, uuid: str, timeout: float) -> str:
        """Graceful power-off, hard after `timeout` s: "not running", "shut down" or
        "forced off"."""

    def migratable_xml(self, uuid: str) -> str:
        """The running domain's definition as a migration destination needs it."""

    def migrate_live(self, uuid: str, dest_uri: str, dest_xml: str, address: str,
                     timeout: float, on_progress: Progress | None = None,
                     bandwidth_mib: int = 0) -> MigrationStats:
        """Live-migrate to the hypervisor at dest_uri, bounded by timeout: a migration still
        running then is aborted and the guest keeps running here (HypervisorError)."""

    def completed_migration(self, uuid: str) -> dict[str, int]:
        """Figures of the migration that brought uuid here (downtime, …); {} if unknown."""

    # events
    def on_lifecycle(self, fn: LifecycleCallback) -> None:
        """Call fn(uuid, name, event) on every domain lifecycle event."""


HypervisorFactory = Callable[[str], Hypervisor]   # URI -> connected hypervisor
