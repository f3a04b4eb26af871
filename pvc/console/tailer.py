"""The console tailer of one node: follows the serial log of every VM running here and
publishes it to the VM's console znode.

  * What to follow comes from a watch on this node's published domains (no loop over all VMs):
    a VM that starts or migrates in is followed, one that stops or leaves is read to the end
    and let go.
  * File changes arrive through inotify on the node's console directory.
  * Writes are coalesced: at most one per VM every WRITE_INTERVAL, each a compare-and-set that
    numbers the new lines on top of what the znode holds. Each write costs the buffer's size,
    so writes are also bounded in bytes: a VM may write `console_log_rate` bytes a second
    (after a write of N bytes, its next waits N / rate seconds), and its buffer holds at most
    `console_log_bytes`. A chatty guest costs at most 1/WRITE_INTERVAL writes and
    `console_log_rate` bytes a second, whatever it prints; what it prints beyond that is
    dropped and marked "[… N lines dropped …]".
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from pvc.console import buffer
from pvc.console.inotify import Inotify
from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.core.errors import PvcError
from pvc.core.models import VM
from pvc.core.store import decode_json, encode
from pvc.vm import domxml

log = logging.getLogger(__name__)
WRITE_INTERVAL = 0.2     # seconds between two writes of one VM's buffer
FIGURES_INTERVAL = 10.0  # seconds between two publications of what the tailer wrote


@dataclass
class Follow:
    vm: VM
    cursor: buffer.FileCursor
    splitter: buffer.LineSplitter = field(default_factory=buffer.LineSplitter)
    pending: buffer.Pending = field(default_factory=lambda: buffer.Pending(1000))
    next_write: float = 0.0        # monotonic time before which this VM is not written


class Tailer:
    def __init__(self, config: Config, cluster: Cluster | None = None) -> None:
        self.config = config
        self.name = config.node.name
        self.directory = config.node.console_log_directory
        self.limit = config.cluster.console_log_lines
        self.max_bytes = config.cluster.console_log_bytes
        self.rate = config.cluster.console_log_rate
        self.bytes_written = 0
        self.cluster = cluster or Cluster.connect(config, patient=True)
        self.store = self.cluster.store
        self.schema = self.cluster.schema
        self.following: dict[str, Follow] = {}
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)   # notified when `following` changes
        self.stopping = threading.Event()
        self._dirty = threading.Event()
        self._sync = threading.Event()
        self._running: set[str] = set()     # what this node publishes it runs
        self.writes = 0
        self.inotify = Inotify()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        import os
        os.makedirs(self.directory, exist_ok=True)
        self.inotify.watch_directory(self.directory)
        self.store.watch_raw(self.schema.node_field(self.name, "domains"), self._on_domains)
        for target, name in ((self._sync_loop, "sync"), (self._file_loop, "files"),
                             (self._write_loop, "writer"), (self._figures_loop, "figures")):
            t = threading.Thread(target=target, name=f"tailer-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("tailer of %s follows %s", self.name, self.directory)

    def stop(self) -> None:
        self.stopping.set()
        self._sync.set()
        self._dirty.set()
        for t in self._threads:
            t.join(5)
        with self.lock:
            for f in self.following.values():
                f.cursor.close()
        self.flush_all()
        self.inotify.close()
        self.cluster.close()

    def _figures_loop(self) -> None:
        """What this tailer wrote, for the metrics (/nodes/N/tailer), when it changed."""
        published: dict[str, int] = {}
        while not self.stopping.wait(FIGURES_INTERVAL):
            with self.lock:
                now = {"bytes_written": self.bytes_written, "writes": self.writes,
                       "following": len(self.following)}
            if now == published:
                continue
            try:
                self.store.put(self.schema.node_field(self.name, "tailer"), now)
                published = now
            except PvcError as e:
                log.warning("could not publish the tailer's figures: %s", e)

    # ------------------------------------------------------------------ what to follow
    def _wakes(self, event: threading.Event) -> Iterator[None]:
        """Once per time `event` is set, until the tailer stops."""
        while not self.stopping.is_set():
            event.wait()
            event.clear()
            if self.stopping.is_set():
                return
            yield

    def _sync_loop(self) -> None:
        for _ in self._wakes(self._sync):
            try:
                self.sync()
            except PvcError as e:
                log.warning("could not update the followed VMs: %s", e)

    def _on_domains(self, data: bytes | None, _version: int | None) -> None:
        """The watch brings the node's published domains: keep them, wake the sync thread."""
        self._running = set(decode_json(data) or {})
        self._sync.set()

    def sync(self) -> None:
        """Follow exactly the VMs with a serial log that this node runs."""
        running = set(self._running)
        with self.lock:
            current = set(self.following)
        for uuid in current - running:
            self._leave(uuid)
        new = sorted(running - current)
        records = self.store.get_json_many(self.schema.vm(u) for u in new)
        for uuid, data in zip(new, records):
            if data and data.get("console_log"):
                self._follow(VM.from_json(data))

    def _follow(self, vm: VM) -> None:
        path = str(domxml.console_log_path(vm.name, self.directory))
        stored = self.store.get_json(self.schema.vm_console(vm.uuid), None) or {}
        mine = stored.get("cursors", {}).get(self.name, {})
        # resume where this node's tailer stopped; a file it never read is read whole (only
        # the last N lines are kept, the others counted as missed)
        cursor = buffer.FileCursor(path, mine.get("inode"), int(mine.get("offset", 0)))
        with self.lock:
            self.following[vm.uuid] = Follow(vm, cursor,
                                             pending=buffer.Pending(self.limit, self.max_bytes))
            self.changed.notify_all()
        log.info("following %s (%s)", vm.name, path)
        self.read(vm.uuid)

    def _leave(self, uuid: str) -> None:
        """The VM stopped or left: read what is left, publish it, let go."""
        self.read(uuid)
        self._write(uuid)
        with self.lock:
            f = self.following.pop(uuid, None)
            self.changed.notify_all()
        if f is not None:
            f.cursor.close()
            log.info("no longer following %s", f.vm.name)

    def wait_following(self, uuid: str, present: bool, timeout: float) -> bool:
        """Until uuid is (or is no longer) followed; False on timeout."""
        with self.changed:
            return self.changed.wait_for(lambda: (uuid in self.following) == present, timeout)

    # ------------------------------------------------------------------ reading
    def _file_loop(self) -> None:
        while not self.stopping.is_set():
            events = self.inotify.read(timeout=1.0)
            names = {e.name for e in events if e.name.endswith(".log")}
            if not names:
                continue
            with self.lock:
                uuids = [u for u, f in self.following.items()
                         if f"{f.vm.name}.log" in names]
            for uuid in uuids:
                self.read(uuid)

    def read(self, uuid: str) -> None:
        with self.lock:
            f = self.following.get(uuid)
            if f is None:
                return
            try:
                data = f.cursor.read()
            except OSError as e:
                log.warning("cannot read %s: %s", f.cursor.path, e)
                return
            if f.cursor.events:
                log.info("%s: log file %s", f.vm.name, ", ".join(f.cursor.events))
                f.splitter.reset()
                f.cursor.events.clear()
            if data:
                f.pending.add(f.splitter.feed(data))
            if f.pending:
                self._dirty.set()

    # ------------------------------------------------------------------ writing
    def _write_loop(self) -> None:
        for _ in self._wakes(self._dirty):
            while not self.stopping.is_set():
                deferred = self.flush_all(due_only=True)
                # rate limit: lines arriving meanwhile are coalesced into the next write
                self.stopping.wait(WRITE_INTERVAL)
                if not deferred:
                    break

    def flush_all(self, due_only: bool = False) -> bool:
        """Write every VM with pending lines (due_only: those whose byte budget allows it
        now). True if some were left for later."""
        now = time.monotonic()
        with self.lock:
            pending = [(u, f.next_write) for u, f in self.following.items() if f.pending]
        deferred = False
        for uuid, next_write in pending:
            if due_only and next_write > now:
                deferred = True
                continue
            self._write(uuid)
        return deferred

    def _write(self, uuid: str) -> None:
        with self.lock:
            f = self.following.get(uuid)
            if f is None or not f.pending:
                return
            lines, skipped = f.pending.take()
            cursor = {"inode": f.cursor.inode, "offset": f.cursor.offset}
        path = self.schema.vm_console(uuid)
        try:
            size = self._publish(path, lines, skipped, cursor)
            with self.lock:
                self.writes += 1
                self.bytes_written += size
                f.next_write = time.monotonic() + max(WRITE_INTERVAL, size / self.rate)
        except PvcError as e:
            log.warning("could not publish the console of %s: %s", f.vm.name, e)
            with self.lock:
                f.pending.put_back(lines, skipped)
            self._dirty.set()

    def _publish(self, path: str, lines: list[str], skipped: int,
                 cursor: dict[str, Any]) -> int:
        """Write the lines; returns the bytes the znode now holds (what the write cost)."""
        # compare-and-set: the other node of a migration may write the buffer meanwhile
        written = self.store.update(path, lambda current, _tx: buffer.merge(
            current, lines, skipped, self.limit, self.name, cursor, self.max_bytes),
            missing=None)
        return len(encode(written.value))
