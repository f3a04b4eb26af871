"""What differs between the libvirt drivers pvc runs on, as data: the adapter reads its driver's
row once when it connects, and its main path has no driver ifs.

`qemu` is production (KVM, or TCG in the sandbox); `test` is libvirt's test driver, which the
sandbox and the test suite use for hundreds of cheap VMs."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Driver:
    kind: str                      # what Capabilities.kind reports
    live_migration: bool
    free_memory_unit: int          # bytes per unit of getFreeMemory() (libvirt promises bytes)
    demo_domain_uuid: str = ""     # a domain the driver makes on its own; not a pvc VM
    secrets: bool = True           # keeps secrets (Ceph keys); the test driver opens no disks


DRIVERS: dict[str, Driver] = {
    "qemu": Driver("qemu", live_migration=True, free_memory_unit=1),
    # the test driver reports KiB, and creates a running demo domain whenever its state is
    # created (that state lives while any client stays connected)
    "test": Driver("test", live_migration=False, free_memory_unit=1024,
                   demo_domain_uuid="6695eb01-f6a4-8304-79aa-97f2502e193f", secrets=False),
}


def driver(libvirt_type: str) -> Driver:
    """The row of a connection's driver (getType()); anything else behaves as QEMU."""
    return DRIVERS.get(libvirt_type.lower(), DRIVERS["qemu"])
