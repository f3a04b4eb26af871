"""VM statistics: libvirt's figures of the VMs a node runs, published to /nodes/N/vm_stats.

The node daemon samples every running domain in one libvirt call every `stats_interval`
seconds and writes one znode for all of them: one write per node per interval, whatever the
number of VMs. The bytes are bounded too, like the console tailer's: after a write of S bytes
the next waits at least S / `stats_rate` seconds, so 1000 VMs on a node cost a longer
interval, not more bytes per second.

Published (JSON): {"at": time, "vms": {uuid: {figure: value}}}, the figures of FIGURES:
cumulative counters since the domain started, and per-second rates over the last interval.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from pvc.core.cluster import Cluster
from pvc.core.errors import PvcError
from pvc.hypervisor.base import DomainStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Figure:
    key: str        # in the znode (short: it is written for every VM at every sample)
    field: str      # DomainStats' field
    label: str      # how `pvc vm info` names it
    rate_key: str   # its per-second rate's key ("" when not a counter)


FIGURES = (
    Figure("cpu", "cpu_seconds", "CPU time (s)", "cpu%"),
    Figure("mem", "memory_bytes", "memory in use", ""),
    Figure("rd", "block_read_bytes", "disk read", "rd/s"),
    Figure("wr", "block_write_bytes", "disk written", "wr/s"),
    Figure("rx", "net_rx_bytes", "network received", "rx/s"),
    Figure("tx", "net_tx_bytes", "network sent", "tx/s"),
)


def figures(now: dict[str, DomainStats], before: dict[str, dict[str, Any]] | None,
            elapsed: float) -> dict[str, dict[str, Any]]:
    """Each VM's figures, with rates over `elapsed` seconds since `before` (a VM that was
    not in it, or whose counter went back, i.e. it restarted, has no rate yet). CPU's rate
    is in percent of one CPU."""
    out: dict[str, dict[str, Any]] = {}
    for uuid, stats in now.items():
        mine: dict[str, Any] = {}
        earlier = (before or {}).get(uuid, {})
        for f in FIGURES:
            value = getattr(stats, f.field)
            if value is None:
                continue
            mine[f.key] = round(value, 3) if isinstance(value, float) else value
            if f.rate_key and f.key in earlier and elapsed > 0 and value >= earlier[f.key]:
                rate = (value - earlier[f.key]) / elapsed
                mine[f.rate_key] = round(rate * 100 if f.key == "cpu" else rate, 1)
        out[uuid] = mine
    return out


class StatsPublisher:
    """Samples this node's VMs and publishes their figures, within the byte budget."""

    def __init__(self, sample: Callable[[], dict[str, DomainStats]],
                 publish: Callable[[dict[str, Any]], None], interval: float,
                 rate: int) -> None:
        self.sample = sample
        self.publish = publish
        self.interval = interval
        self.rate = rate
        self.stopping = threading.Event()
        self.bytes_written = 0
        self.writes = 0
        self._last: dict[str, dict[str, Any]] | None = None
        self._last_at = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="vm-stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        wait = 0.0
        while not self.stopping.wait(wait):
            try:
                size = self.once()
            except PvcError as e:    # libvirt or ZooKeeper away: the next sample tries again
                log.warning("VM statistics not published: %s", e)
                size = 0
            wait = max(self.interval, size / self.rate)

    def once(self) -> int:
        """One sample, published unless nothing changed; the bytes it cost."""
        at = time.monotonic()
        vms = figures(self.sample(), self._last, at - self._last_at)
        if self.writes and vms == self._last:
            return 0    # nothing moved (idle guests, or a driver without figures)
        record = {"at": round(time.time(), 3), "vms": vms}
        self.publish(record)
        self._last, self._last_at = vms, at
        size = len(json.dumps(record, separators=(",", ":")))
        self.bytes_written += size
        self.writes += 1
        return size


def published(cluster: Cluster, nodes: list[str]) -> dict[str, dict[str, Any]]:
    """The last published figures of every VM these nodes run: {uuid: figures + "at"}."""
    out: dict[str, dict[str, Any]] = {}
    records = cluster.store.get_json_many(cluster.schema.node_field(n, "vm_stats")
                                          for n in nodes)
    for node, record in zip(nodes, records):
        for uuid, mine in (record or {}).get("vms", {}).items():
            out[uuid] = {**mine, "at": record["at"], "node": node}
    return out


def text(figures: dict[str, Any]) -> str:
    """One line for an operator: "cpu 3.1% (12.5 s), mem 45.0 MiB, disk read 1.2 MiB
    (0 B/s), …"."""
    parts = []
    for f in FIGURES:
        if f.key not in figures:
            continue
        value = figures[f.key]
        shown = f"{value:g} s" if f.key == "cpu" else size(value)
        rate = figures.get(f.rate_key) if f.rate_key else None
        if f.key == "cpu":
            parts.append(f"cpu {rate:g}% ({shown})" if rate is not None else f"cpu {shown}")
        else:
            label = f.label.removesuffix(" in use")
            parts.append(f"{label} {shown}" + (f" ({size(rate)}/s)" if rate is not None else ""))
    return ", ".join(parts) or "no figures reported by its hypervisor"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
