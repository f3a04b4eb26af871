"""Renewing a running task's broker lease.

kombu's Redis transport keeps every delivered, unacknowledged message in the sorted set
`unacked_index`, scored by delivery time; a sweep hands back messages older than the visibility
timeout. A running task pushes its score forward every third of that timeout, so it stays out of
the sweep while its worker lives and comes back within seconds once the worker is gone.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

log = logging.getLogger(__name__)
_clients: dict[str, Any] = {}
UNACKED_INDEX = "unacked_index"


def _client(url: str) -> Any:
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    return _clients[url]


class Lease:
    def __init__(self, broker_url: str, delivery_tag: str | None, seconds: float) -> None:
        self.url = broker_url
        self.tag = delivery_tag
        self.period = seconds / 3
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self) -> None:
        try:
            # XX: only move an existing entry; never resurrect an acknowledged one
            _client(self.url).zadd(UNACKED_INDEX, {self.tag: time.time()}, xx=True)
        except redis.RedisError as e:
            log.warning("could not renew the lease of task %s: %s", self.tag, e)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.renew()

    def __enter__(self) -> "Lease":
        if self.tag:
            self.renew()
            self._thread = threading.Thread(target=self._run, name="task-lease", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
