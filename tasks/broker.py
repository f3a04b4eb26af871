"""The broker as the primary's sweep sees it (pvc.operations.sweep.Broker), over Redis.

kombu's Redis transport keeps a queue's waiting messages in lists named after the queue (one
per priority step) and the delivered, unacknowledged ones in the hash `unacked`; each message's
headers carry the task id, which is the operation id.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import redis

from pvc.core import redis_client as redisconn
from pvc.core.config import Config
from pvc.core.errors import Unavailable
from pvc.core.models import Operation
from pvc.operations.registry import queue_for

UNACKED = "unacked"
PRIORITY_SEPARATOR = "\x06\x16"
log = logging.getLogger(__name__)


class RedisBroker:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.redis = redisconn.master(cfg, cfg.cluster.redis.broker_db)

    def holds(self, op: Operation) -> bool:
        try:
            return self._holds(op)
        except redis.RedisError as e:
            raise Unavailable(f"cannot reach Redis {redisconn.where(self.cfg)}: {e}") \
                from None

    def _lists(self, node: str) -> list[str]:
        """The node queue's lists of waiting messages (one per priority step)."""
        queue = queue_for(node)
        return [queue] + [k.decode() for k in
                          self.redis.scan_iter(f"{queue}{PRIORITY_SEPARATOR}*")]

    def queue_lengths(self, nodes: list[str]) -> dict[str, int]:
        """Messages waiting in each node's queue (for the metrics; {} when Redis is away)."""
        try:
            return {queue_for(n): sum(int(self.redis.llen(name)) for name in self._lists(n))
                    for n in nodes}
        except redis.RedisError as e:
            log.warning("broker queue lengths unknown: %s", e)
            return {}

    def next_waiting(self, node: str) -> str:
        """The id of the message a consumer of node's queue would take next ("" if none
        waits): kombu pushes at the head of a list and pops from its tail."""
        for name in self._lists(node):
            last = self.redis.lindex(name, -1)
            if last is not None:
                return _task_id(last)
        return ""

    def _holds(self, op: Operation) -> bool:
        lists = self._lists(op.node)
        for name in lists:
            if any(_task_id(raw) == op.id for raw in self.redis.lrange(name, 0, -1)):
                return True
        for raw in self.redis.hvals(UNACKED):
            try:
                message = json.loads(raw)[0]
            except (ValueError, IndexError, TypeError):
                continue
            if _task_id(message) == op.id:
                return True
        return False

    def send(self, op: Operation) -> None:
        from tasks.client import submit
        submit(self.cfg, op)


def _task_id(message: Any) -> str:
    if isinstance(message, (bytes, str)):
        try:
            message = json.loads(message)
        except ValueError:
            return ""
    return str(message.get("headers", {}).get("id", "")) if isinstance(message, dict) else ""
