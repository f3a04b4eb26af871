"""The broker as the primary's sweep sees it (pvc.operations.sweep.Broker), over Redis.

kombu's Redis transport keeps a queue's waiting messages in lists named after the queue (one
per priority step) and the delivered, unacknowledged ones in the hash `unacked`; each message's
headers carry the task id, which is the operation id.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from pvc.core import redis_client as redisconn
from pvc.core.config import Config
from pvc.core.errors import Unavailable
from pvc.core.models import Operation
from pvc.operations.registry import queue_for

UNACKED = "unacked"
PRIORITY_SEPARATOR = "\x06\x16"
log = logging.getLogger(__name__)


class RedisBroker:
    """Asked over RESP (redis_client.ask), without redis-py: its import (asyncio with it)
    was a fifth of a node daemon's memory, for a few questions a keepalive."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._master: tuple[str, int] | None = None   # asked of the Sentinels when unknown

    def _ask(self, *commands: list[str]) -> list[Any]:
        """The replies to commands, asked of the broker's master in its database: the one
        it asked last, or (it did not answer, or is a master no more) the Sentinels' now."""
        failure: Exception = ConnectionError("no master")
        for known in (True, False):
            try:
                if self._master is None or not known:
                    self._master = redisconn.master_address(self.cfg)
                role, _db, *replies = redisconn.ask(
                    *self._master, self.cfg.redis_password(), ["ROLE"],
                    ["SELECT", str(self.cfg.cluster.redis.broker_db)], *commands)
                if role[0] == "master":
                    return replies
                failure = ConnectionError(f"{self._master[0]} is a {role[0]} now")
            except (OSError, redisconn.ReplyError) as e:
                failure = e
            self._master = None
        raise Unavailable(f"cannot reach Redis {redisconn.where(self.cfg)}: {failure}")

    def _lists(self, node: str) -> list[str]:
        """The node queue's lists of waiting messages (one per priority step)."""
        queue = queue_for(node)
        found, cursor = [queue], "0"
        while True:
            (cursor, keys), = self._ask(["SCAN", cursor, "MATCH",
                                         f"{queue}{PRIORITY_SEPARATOR}*", "COUNT", "1000"])
            found += keys
            if cursor == "0":
                return found

    def holds(self, op: Operation) -> bool:
        lists = self._lists(op.node)
        waiting = self._ask(*(["LRANGE", name, "0", "-1"] for name in lists), ["HVALS", UNACKED])
        if any(_task_id(raw) == op.id for messages in waiting[:-1] for raw in messages):
            return True
        for raw in waiting[-1]:
            try:
                message = json.loads(raw)[0]
            except (ValueError, IndexError, TypeError):
                continue
            if _task_id(message) == op.id:
                return True
        return False

    def queue_lengths(self, nodes: list[str]) -> dict[str, int]:
        """Messages waiting in each node's queue (for the metrics; {} when Redis is away)."""
        try:
            return {queue_for(n): sum(self._ask(*(["LLEN", name] for name in self._lists(n))))
                    for n in nodes}
        except Unavailable as e:
            log.warning("broker queue lengths unknown: %s", e)
            return {}

    def next_waiting(self, node: str) -> str:
        """The id of the message a consumer of node's queue would take next ("" if none
        waits): kombu pushes at the head of a list and pops from its tail."""
        for last in self._ask(*(["LINDEX", name, "-1"] for name in self._lists(node))):
            if last is not None:
                return _task_id(last)
        return ""

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
