"""The hypervisor interface in memory, for the unit tier (no libvirtd).

A `World` holds every fake node's running domains, so a live migration really moves a domain
from one node to another. It can be told to fail a live migration, hang one (until the caller's
time limit aborts it), fail a start, or report a domain on two nodes at once. Lifecycle events
are delivered on a thread of their own, as libvirt's event loop does.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from pvc.core.errors import HypervisorError
from pvc.hypervisor.base import (
    Capabilities,
    DomainStats,
    HostInfo,
    LifecycleCallback,
    MigrationStats,
    Progress,
    RunningDomain,
)


@dataclass
class Faults:
    """What the world is told to get wrong."""
    live_fails: set[str] = field(default_factory=set)       # VM names: live migration fails
    live_hangs: set[str] = field(default_factory=set)       # VM names: runs until aborted
    start_fails: set[tuple[str, str]] = field(default_factory=set)   # (uri, VM name)
    before_migrate: Callable[[str], None] | None = None      # called with the VM name


class World:
    def __init__(self, mem_total_mib: int = 8192, live_migration: bool = True) -> None:
        self.lock = threading.RLock()
        self.domains: dict[str, dict[str, RunningDomain]] = {}   # uri -> uuid -> domain
        self.mem_total_mib = mem_total_mib
        self.live_migration = live_migration
        self.faults = Faults()
        self.listeners: dict[str, list[LifecycleCallback]] = {}
        self.migrations: list[tuple[str, str, str]] = []         # (name, from uri, to uri)
        self.stats: dict[str, DomainStats] = {}                  # uuid -> what it reports
        self._events: "queue.Queue[tuple[str, str, str, str]]" = queue.Queue()
        threading.Thread(target=self._deliver, name="fake-hv-events", daemon=True).start()

    def hypervisor(self, uri: str) -> "FakeHypervisor":
        """The factory a NodeContext takes."""
        with self.lock:
            self.domains.setdefault(uri, {})
        return FakeHypervisor(self, uri)

    def where(self, name: str) -> list[str]:
        """URIs running a domain of this name (exactly one, when all is well)."""
        with self.lock:
            return [uri for uri, doms in self.domains.items()
                    if any(d.name == name for d in doms.values())]

    def duplicate(self, name: str, uri: str) -> None:
        """Report the domain `name` on `uri` too (a split brain to resolve)."""
        with self.lock:
            dom = next(d for doms in self.domains.values() for d in doms.values()
                       if d.name == name)
            self.domains[uri][dom.uuid] = dom
        self._event(uri, dom.uuid, name, "started")

    # ---------------------------------------------------------------- events
    def _event(self, uri: str, uuid: str, name: str, event: str) -> None:
        self._events.put((uri, uuid, name, event))

    def _deliver(self) -> None:
        while True:
            uri, uuid, name, event = self._events.get()
            for fn in list(self.listeners.get(uri, [])):
                fn(uuid, name, event)


_NAME = re.compile(r"<name>([^<]+)</name>")


class FakeHypervisor:
    def __init__(self, world: World, uri: str) -> None:
        self.world = world
        self.uri = uri
        self.secrets: dict[str, tuple[str, bytes]] = {}

    @property
    def _mine(self) -> dict[str, RunningDomain]:
        return self.world.domains[self.uri]

    def close(self) -> None:
        pass

    def define_secret(self, uuid: str, usage: str, value: bytes) -> None:
        self.secrets[uuid] = (usage, value)

    def capabilities(self) -> Capabilities:
        return Capabilities("fake", self.world.live_migration)

    def host_info(self) -> HostInfo:
        # free memory follows from the VMs' sizes in their records (placement counts them)
        return HostInfo(self.world.mem_total_mib, self.world.mem_total_mib, 4)

    def running(self) -> dict[str, RunningDomain]:
        with self.world.lock:
            return dict(self._mine)

    def domain_stats(self) -> dict[str, DomainStats]:
        with self.world.lock:
            return {u: self.world.stats.get(u, DomainStats()) for u in self._mine}

    def domain_size(self, uuid: str) -> tuple[int, int]:
        return 0, 1

    def is_running(self, uuid: str) -> bool:
        with self.world.lock:
            return uuid in self._mine

    def start(self, xml: str, uuid: str) -> bool:
        name = _NAME.search(xml)
        label = name.group(1) if name else uuid
        with self.world.lock:
            if uuid in self._mine:
                return False
            if (self.uri, label) in self.world.faults.start_fails:
                raise HypervisorError(f"libvirt could not start the domain: injected ({label})")
            self._mine[uuid] = RunningDomain(uuid, label, "running")
        self.world._event(self.uri, uuid, label, "started")
        return True

    def destroy(self, uuid: str) -> bool:
        with self.world.lock:
            dom = self._mine.pop(uuid, None)
        if dom is None:
            return False
        self.world._event(self.uri, uuid, dom.name, "stopped")
        return True

    def shutdown(self, uuid: str, timeout: float) -> str:
        return "shut down" if self.destroy(uuid) else "not running"

    def migratable_xml(self, uuid: str) -> str:
        dom = self._lookup(uuid)
        return f"<domain type='qemu'><name>{dom.name}</name><uuid>{uuid}</uuid></domain>"

    def migrate_live(self, uuid: str, dest_uri: str, dest_xml: str, address: str,
                     timeout: float, on_progress: Progress | None = None,
                     bandwidth_mib: int = 0) -> MigrationStats:
        dom = self._lookup(uuid)
        faults = self.world.faults
        if faults.before_migrate:
            faults.before_migrate(dom.name)
        started = time.monotonic()
        if dom.name in faults.live_fails:
            raise HypervisorError(f"live migration failed: injected failure of {dom.name}")
        if dom.name in faults.live_hangs:
            time.sleep(timeout)   # a migration that never converges, until its time limit
            raise HypervisorError(f"live migration did not finish within {timeout:g}s and was "
                                  "aborted; the VM still runs on its source")
        with self.world.lock:
            if dest_uri not in self.world.domains:
                raise HypervisorError(f"cannot reach {dest_uri}")
            self.world.domains[dest_uri][uuid] = self._mine.pop(uuid)
            self.world.migrations.append((dom.name, self.uri, dest_uri))
        self.world._event(dest_uri, uuid, dom.name, "started")
        self.world._event(self.uri, uuid, dom.name, "stopped")
        return MigrationStats(int((time.monotonic() - started) * 1000))

    def completed_migration(self, uuid: str) -> dict[str, int]:
        return {"downtime": 1}

    def on_lifecycle(self, fn: LifecycleCallback) -> None:
        self.world.listeners.setdefault(self.uri, []).append(fn)

    def _lookup(self, uuid: str) -> RunningDomain:
        with self.world.lock:
            dom = self._mine.get(uuid)
        if dom is None:
            raise HypervisorError(f"no domain {uuid} on {self.uri}")
        return dom
