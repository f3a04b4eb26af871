"""The metrics endpoint: a primary-only service serving Prometheus's text format at
http://LISTEN:PORT/metrics to a scraper that sends `Authorization: Bearer TOKEN`.

One endpoint for the cluster, on the primary at the floating IP: every figure pvc has is in
ZooKeeper already (VM statistics and console figures published by each node, counters
written where events happen), so the primary reads them all and Prometheus needs one target,
which follows the primary's moves. A node that dies takes no endpoint with it; per-node
endpoints would add a target per node and a port per node to secure, for nothing ZooKeeper
does not already carry.

A scrape never waits for the cluster: a thread collects every `interval` seconds (ZooKeeper,
Patroni, the Sentinels, Ceph: the same gathering as `pvc cluster status`) and a scrape renders
the last collection. So a scrape costs the same at 10 or 1000 VMs, and a slow Patroni makes
the figures older (pvc_collected_timestamp_seconds), not the scrape slower.
"""
from __future__ import annotations

import hmac
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from pvc.core import counters
from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.observe import metrics, status

log = logging.getLogger(__name__)
QueueLengths = Callable[[list[str]], dict[str, int]]   # nodes -> {queue: waiting messages}


class MetricsExporter:
    name = "metrics"

    def __init__(self, cluster: Cluster, config: Config,
                 queue_lengths: QueueLengths | None = None,
                 dns: Callable[[], Any] = lambda: None) -> None:
        self.cluster = cluster
        self.config = config
        self.queue_lengths = queue_lengths
        self.dns = dns                    # the primary's DNS aggregator, if any
        self.snapshot = metrics.Exposition()   # what a scrape serves
        self.active = False
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ PrimaryService
    def start(self) -> None:
        self._stop.clear()
        self.active = True
        address, port = self.config.metrics_address(), self.config.cluster.metrics.port
        self._server = _server(address, port, self)
        self._threads = [threading.Thread(target=self._server.serve_forever, name="metrics-http",
                                          daemon=True),
                         threading.Thread(target=self._collect_loop, name="metrics-collect",
                                          daemon=True)]
        for t in self._threads:
            t.start()
        log.info("metrics on http://%s:%d/metrics", address, port)

    def stop(self) -> None:
        self.active = False
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for t in self._threads:
            t.join(5)
        self._threads = []

    # ------------------------------------------------------------------ collecting
    def _collect_loop(self) -> None:
        while self.active:
            self.collect_or_say_down()
            self._stop.wait(self.config.cluster.metrics.interval)

    def collect_or_say_down(self) -> None:
        """A collection; one that fails (ZooKeeper away) serves pvc_up 0 alone, not figures
        that went stale, and the next pass retries."""
        try:
            self.collect()
        except Exception as e:
            log.warning("metrics collection failed: %s", e)
            self.snapshot.down()

    def collect(self) -> None:
        """Read everything once and make it what scrapes serve."""
        started = time.monotonic()
        self._ping()
        c = self.cluster
        gathered = status.gather(c)
        names = [n.name for n in gathered.nodes]
        stats = c.store.get_json_many(c.schema.node_field(n, "vm_stats") for n in names)
        tailers = c.store.get_json_many(c.schema.node_field(n, "tailer") for n in names)
        aggregator = self.dns()
        dns = ({"writes": aggregator.writes, "last_success": aggregator.last_success}
               if aggregator is not None else {})
        collection = metrics.Collection(
            gathered, counters.read_all(c),
            {n: s for n, s in zip(names, stats) if s}, {n: t for n, t in zip(names, tailers) if t},
            self.queue_lengths(names) if self.queue_lengths else {}, dns)
        self.snapshot.collected(metrics.families(collection), time.monotonic() - started,
                                time.time())

    def _ping(self) -> None:
        t0 = time.monotonic()
        self.cluster.store.exists(self.cluster.schema.root)
        self.snapshot.zk_latency.observe(time.monotonic() - t0)

    def render(self) -> bytes:
        return self.snapshot.render()


def _server(address: str, port: int, exporter: MetricsExporter) -> ThreadingHTTPServer:
    token = exporter.config.metrics_token().encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            given = self.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, b"Bearer " + token):
                self._send(401, b"unauthorized: send Authorization: Bearer <token>\n",
                           "text/plain", {"WWW-Authenticate": 'Bearer realm="pvc"'})
            elif self.path.split("?")[0] != "/metrics":
                self._send(404, b"not found: the metrics are at /metrics\n", "text/plain")
            else:
                self._send(200, exporter.render(), exporter.snapshot.content_type)

        def _send(self, code: int, body: bytes, ctype: str,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass   # a scrape every few seconds is not news

    return _FreeBindServer((address, port), Handler)


class _FreeBindServer(ThreadingHTTPServer):
    """Binds the floating IP even in the instant before the primary holds it (IP_FREEBIND),
    so the endpoint never fails to start over a race with the address."""
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
        super().server_bind()
