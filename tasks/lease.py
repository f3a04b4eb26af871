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

from pvc.core import redis_client as redisconn
from pvc.core.config import Config

log = logging.getLogger(__name__)
_clients: dict[str, Any] = {}
UNACKED_INDEX = "unacked_index"


def _client(cfg: Config) -> Any:
    """The broker's master (through the Sentinels when there are), one client a process."""
    key = redisconn.where(cfg)
    if key not in _clients:
        _clients[key] = redisconn.master(cfg, cfg.cluster.redis.broker_db)
    return _clients[key]


class Lease:
    def __init__(self, cfg: Config, delivery_tag: str | None, seconds: float) -> None:
        self.cfg = cfg
        self.tag = delivery_tag
        self.period = seconds / 3
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self) -> None:
        try:
            # XX: only move an existing entry; never resurrect an acknowledged one
            _client(self.cfg).zadd(UNACKED_INDEX, {self.tag: time.time()}, xx=True)
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
