"""The libvirt adapter: the only module that imports libvirt.

Works the same against `qemu+unix://…` (real guests) and `test+unix://…` (libvirt's test driver
behind a libvirtd). pvc runs guests as transient domains created from the XML stored in
ZooKeeper, so a node keeps no definitions of its own.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import libvirt

from pvc.core.errors import HypervisorError, Unavailable
from pvc.hypervisor import drivers
from pvc.hypervisor.base import (
    Capabilities,
    DomainStats,
    HostInfo,
    LifecycleCallback,
    MigrationStats,
    RunningDomain,
)

log = logging.getLogger(__name__)

# Lifecycle events pvc cares about, by libvirt's numbers.
EVENT_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}

PROGRESS_INTERVAL = 1.0   # seconds between progress reports of a running migration

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _ensure_event_loop() -> None:
    """libvirt delivers events only with an event loop registered before connecting."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _quiet_errors() -> None:
    # libvirt prints every error to stderr by default; pvc reports them itself.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class LibvirtHypervisor:
    """The Hypervisor interface (pvc.hypervisor.base) over libvirt."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: Any = None
        self._lock = threading.Lock()
        self._stop_waiters: dict[str, threading.Event] = {}
        self._listeners: list[LifecycleCallback] = []
        self.driver = drivers.DRIVERS["qemu"]   # until connected

    # ------------------------------------------------------------------ connection
    def connect(self) -> "LibvirtHypervisor":
        _quiet_errors()
        _ensure_event_loop()
        try:
            self._conn = libvirt.open(self.uri)
        except libvirt.libvirtError as e:
            raise Unavailable(f"cannot reach libvirt at {self.uri}: "
                              f"{e.get_error_message()}") from None
        self._conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                          self._on_lifecycle, None)
        self.driver = drivers.driver(self._conn.getType())
        if self.driver.demo_domain_uuid:
            self._remove_demo_domain(self.driver.demo_domain_uuid)
        return self

    def _remove_demo_domain(self, uuid: str) -> None:
        """A domain the driver made on its own: not a pvc VM."""
        try:
            dom = self._conn.lookupByUUIDString(uuid)
            dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass

    def define_secret(self, uuid: str, usage: str, value: bytes) -> None:
        xml = (f"<secret ephemeral='no' private='yes'><uuid>{uuid}</uuid>"
               f"<usage type='ceph'><name>{usage}</name></usage></secret>")
        if not self.driver.secrets:
            return
        try:
            secret = self.conn.secretDefineXML(xml)
            secret.setValue(value)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"cannot define secret {uuid} ({usage}) in {self.uri}: "
                                  f"{e.get_error_message()}") from None

    @property
    def conn(self) -> Any:
        with self._lock:
            if self._conn is None or not self._conn.isAlive():
                self._conn = None
                self.connect()
            return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None

    # ------------------------------------------------------------------ facts
    def capabilities(self) -> Capabilities:
        _ = self.conn   # connecting reads the driver
        return Capabilities(kind=self.driver.kind, live_migration=self.driver.live_migration)

    def host_info(self) -> HostInfo:
        info = self.conn.getInfo()
        free = self.conn.getFreeMemory() * self.driver.free_memory_unit // (1024 * 1024)
        return HostInfo(mem_total_mib=int(info[1]), mem_free_mib=int(free), cpus=int(info[2]))

    def running(self) -> dict[str, RunningDomain]:
        """Every active domain, in one call."""
        flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
        try:
            stats = self.conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, flags)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"cannot list domains on {self.uri}: "
                                  f"{e.get_error_message()}") from None
        out = {}
        for dom, st in stats:
            uuid = dom.UUIDString()
            out[uuid] = RunningDomain(uuid, dom.name(),
                                      STATE_NAMES.get(st.get("state.state", 0), "unknown"))
        return out

    def domain_stats(self) -> dict[str, DomainStats]:
        """Every active domain's figures, in one call (virConnectGetAllDomainStats)."""
        groups = (libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON |
                  libvirt.VIR_DOMAIN_STATS_BLOCK | libvirt.VIR_DOMAIN_STATS_INTERFACE)
        try:
            stats = self.conn.getAllDomainStats(
                groups, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"cannot read domain statistics on {self.uri}: "
                                  f"{e.get_error_message()}") from None
        return {dom.UUIDString(): _domain_stats(st) for dom, st in stats}

    def domain_size(self, uuid: str) -> tuple[int, int]:
        """(memory MiB, vCPUs) of a running domain pvc does not know."""
        info = self._lookup(uuid).info()
        return int(info[2]) // 1024, int(info[3])

    def is_running(self, uuid: str) -> bool:
        dom = self._find(uuid)
        return dom is not None and bool(dom.isActive())

    # ------------------------------------------------------------------ actions
    def start(self, xml: str, uuid: str) -> bool:
        """Run the domain from xml; False if it was already running."""
        try:
            self.conn.createXML(xml, 0)   # the common case in one call
            return True
        except libvirt.libvirtError as e:
            first_error = e.get_error_message()
        dom = self._find(uuid)
        if dom is None:
            raise HypervisorError(f"libvirt could not start the domain: {first_error}")
        if dom.isActive():
            return False
        try:
            dom.undefine()   # a stale persistent definition: the cluster's XML wins
            self.conn.createXML(xml, 0)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"libvirt could not start the domain: "
                                  f"{e.get_error_message()}") from None
        return True

    def destroy(self, uuid: str) -> bool:
        """Hard power-off; False if it was not running."""
        dom = self._find(uuid)
        if dom is None or not dom.isActive():
            return False
        try:
            dom.destroy()
        except libvirt.libvirtError as e:
            if self.is_running(uuid):
                raise HypervisorError(f"libvirt could not stop the domain: "
                                      f"{e.get_error_message()}") from None
        return True

    def shutdown(self, uuid: str, timeout: float) -> str:
        """Ask the guest to power off; after `timeout` s, power it off hard.
        Returns "not running", "shut down" or "forced off"."""
        dom = self._find(uuid)
        if dom is None or not dom.isActive():
            return "not running"
        stopped = self._stop_waiter(uuid)
        try:
            try:
                dom.shutdown()
            except libvirt.libvirtError as e:
                if not self.is_running(uuid):
                    return "shut down"
                log.info("graceful shutdown refused (%s); forcing off", e.get_error_message())
                self.destroy(uuid)
                return "forced off"
            if stopped.wait(timeout) or not self.is_running(uuid):
                return "shut down"
            self.destroy(uuid)
            return "forced off"
        finally:
            self._stop_waiters.pop(uuid, None)

    def migratable_xml(self, uuid: str) -> str:
        """The running domain's definition as a migration destination needs it."""
        return self._lookup(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)

    def migrate_live(self, uuid: str, dest_uri: str, dest_xml: str, address: str,
                     timeout: float, on_progress: Callable[[str], None] | None = None,
                     bandwidth_mib: int = 0) -> MigrationStats:
        """Peer-to-peer live migration to the libvirtd at dest_uri, bounded by timeout: a
        migration still running then is aborted and the guest keeps running here.
        bandwidth_mib (MiB/s, 0: unlimited) caps the migration's network use."""
        dom = self._lookup(uuid)
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
                 | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)
        # the destination's QEMU listens on its migration address only (libvirt's default is
        # every address), and the source dials that address
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{address}",
                                  libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: address,
                                  libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml}
        if bandwidth_mib:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth_mib)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                dom.migrateToURI3(dest_uri, params, flags)
            except libvirt.libvirtError as e:
                outcome["error"] = e.get_error_message()

        worker = threading.Thread(target=run, name=f"migrate-{uuid}", daemon=True)
        started = time.monotonic()
        worker.start()
        while worker.is_alive():
            worker.join(PROGRESS_INTERVAL)   # wakes at once when the migration ends
            elapsed = time.monotonic() - started
            if worker.is_alive() and elapsed > timeout:
                self._abort(dom)
                worker.join(60)
                if "error" in outcome or worker.is_alive():
                    raise HypervisorError(f"live migration did not finish within "
                                          f"{timeout:g}s and was aborted; the VM still runs "
                                          "on its source")
                break   # it completed before the abort took hold
            if worker.is_alive() and on_progress is not None:
                on_progress(self._job_progress(dom, elapsed))
        if "error" in outcome:
            raise HypervisorError(f"live migration failed: {outcome['error']}")
        return MigrationStats(elapsed_ms=int((time.monotonic() - started) * 1000))

    def completed_migration(self, uuid: str) -> dict[str, int]:
        """libvirt's figures of the migration that brought uuid here (downtime etc.)."""
        try:
            stats = self._lookup(uuid).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except (libvirt.libvirtError, HypervisorError):
            return {}
        keys = ("downtime", "time_elapsed", "memory_processed", "setup_time")
        return {k: int(stats[k]) for k in keys if k in stats}

    def _abort(self, dom: Any) -> None:
        try:
            dom.abortJob()
        except libvirt.libvirtError as e:
            log.warning("could not abort migration: %s", e.get_error_message())

    @staticmethod
    def _job_progress(dom: Any, elapsed: float) -> str:
        try:
            info = dom.jobInfo()
        except libvirt.libvirtError:
            return f"migrating ({elapsed:.0f}s)"
        total, done = info[6], info[7]   # memory total / processed, bytes
        pct = f", {100 * done // total}% of memory" if total else ""
        return f"migrating ({elapsed:.0f}s{pct})"

    # ------------------------------------------------------------------ events
    def on_lifecycle(self, fn: LifecycleCallback) -> None:
        self._listeners.append(fn)

    def _stop_waiter(self, uuid: str) -> threading.Event:
        ev = threading.Event()
        self._stop_waiters[uuid] = ev
        return ev

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        uuid, name = dom.UUIDString(), dom.name()
        ev_name = EVENT_NAMES.get(event, str(event))
        if ev_name == "stopped" and detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED:
            ev_name = "migrated"   # it runs on another node now: no drift here
        if ev_name in ("stopped", "crashed", "migrated"):
            waiter = self._stop_waiters.get(uuid)
            if waiter:
                waiter.set()
        for fn in self._listeners:
            try:
                fn(uuid, name, ev_name)
            except Exception:  # a listener's bug must not kill libvirt's event thread
                log.exception("lifecycle listener failed")

    # ------------------------------------------------------------------ helpers
    def _find(self, uuid: str) -> Any:
        try:
            return self.conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise HypervisorError(f"libvirt lookup of {uuid} failed: "
                                  f"{e.get_error_message()}") from None

    def _lookup(self, uuid: str) -> Any:
        dom = self._find(uuid)
        if dom is None:
            raise HypervisorError(f"no domain {uuid} on {self.uri}")
        return dom


def undefine_all(uri: str) -> int:
    """Destroy and undefine every domain at uri (sandbox clean-up). Returns how many."""
    _quiet_errors()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return 0
    n = 0
    try:
        for dom in conn.listAllDomains():
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
                n += 1
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()
    return n


def ping(uri: str) -> bool:
    """True when a libvirtd answers at uri."""
    _quiet_errors()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return False
    conn.close()
    return True


def connect(uri: str) -> LibvirtHypervisor:
    """The production hypervisor factory (pvc.hypervisor.base.HypervisorFactory)."""
    return LibvirtHypervisor(uri).connect()


def _domain_stats(st: dict[str, Any]) -> DomainStats:
    """libvirt's typed parameters ("cpu.time", "block.0.rd.bytes", …) as DomainStats."""
    def total(prefix: str, suffix: str) -> int | None:
        found = [int(v) for k, v in st.items()
                 if k.startswith(prefix) and k.endswith(suffix) and k.count(".") == 3]
        return sum(found) if found else None

    cpu = st.get("cpu.time")
    rss, current, unused = st.get("balloon.rss"), st.get("balloon.current"), \
        st.get("balloon.unused")
    memory = (current - unused if current is not None and unused is not None
              else rss if rss is not None else current)    # KiB
    return DomainStats(
        cpu_seconds=cpu / 1e9 if cpu is not None else None,
        memory_bytes=int(memory) * 1024 if memory is not None else None,
        block_read_bytes=total("block.", ".rd.bytes"),
        block_write_bytes=total("block.", ".wr.bytes"),
        net_rx_bytes=total("net.", ".rx.bytes"),
        net_tx_bytes=total("net.", ".tx.bytes"))
