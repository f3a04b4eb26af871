"""Node logs in the cluster: each node process (daemon, worker, tailer) sends its log lines to
its node's buffer in ZooKeeper, /nodes/N/log, so `pvc node log N` reads them from anywhere.

The buffer is a console buffer (pvc.console.buffer): numbered lines, at most
`node_log_lines` lines and `node_log_bytes` bytes, written by compare-and-set so the node's
processes share it. Writes are bounded like the tailer's: at most one per WRITE_INTERVAL per
process, and after a write of S bytes the next waits S / `node_log_rate` seconds; lines logged
faster are dropped and counted ("[… N lines dropped …]"). Logging never waits for ZooKeeper:
a line is queued and the writer thread publishes it.
"""
from __future__ import annotations

import logging
import threading

from pvc.console import buffer
from pvc.core.cluster import Cluster
from pvc.core.errors import PvcError
from pvc.core.store import encode

WRITE_INTERVAL = 0.2
# Loggers whose lines are not published: ZooKeeper's client logs about the very session the
# writer uses (a lost connection would log about itself in a loop).
QUIET = ("kazoo",)


class NodeLogHandler(logging.Handler):
    def __init__(self, cluster: Cluster, process: str, level: int = logging.INFO) -> None:
        super().__init__(level)
        cfg = cluster.config
        self.store = cluster.store
        self.path = cluster.schema.node_field(cfg.node.name, "log")
        self.process = process
        self.limit = cfg.cluster.node_log_lines
        self.max_bytes = cfg.cluster.node_log_bytes
        self.rate = cfg.cluster.node_log_rate
        self.pending = buffer.Pending(self.limit, self.max_bytes)
        self.setFormatter(logging.Formatter(
            f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="node-log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(QUIET) or threading.current_thread() is self._thread:
            return
        try:
            lines = [buffer.clean(line.encode()) for line in self.format(record).splitlines()]
        except Exception:
            self.handleError(record)
            return
        with self._lock:
            self.pending.add(lines)
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            size = self.write()
            self._stopping.wait(max(WRITE_INTERVAL, size / self.rate))

    def write(self) -> int:
        """Publish what is pending; the bytes the buffer now holds (what the write cost)."""
        with self._lock:
            if not self.pending:
                return 0
            lines, skipped = self.pending.take()
        try:
            written = self.store.update(self.path, lambda current, _tx: buffer.merge(
                current, lines, skipped, self.limit, max_bytes=self.max_bytes), missing=None)
        except PvcError:
            with self._lock:     # kept for the next write (within the bounds)
                self.pending.put_back(lines, skipped)
            self._wake.set()
            return self.max_bytes   # and wait as after a full write
        return len(encode(written.value))

    def close(self) -> None:
        """What is pending goes out (once), then the writer stops."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(2)
        try:
            self.write()
        except Exception:
            pass
        super().close()


def attach(cluster: Cluster, process: str) -> NodeLogHandler:
    """Send this process's log (INFO and up) to its node's buffer too."""
    handler = NodeLogHandler(cluster, process)
    logging.getLogger().addHandler(handler)
    return handler


def detach(handler: NodeLogHandler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()


def read(cluster: Cluster, node: str) -> dict[str, object] | None:
    return cluster.store.get_json(  # type: ignore[no-any-return]
        cluster.schema.node_field(node, "log"), None)
