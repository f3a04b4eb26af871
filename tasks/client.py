"""Submitting operations to their node's queue (the CLI, the primary's sweep): one message
pushed to the broker's master (tasks.wire), found through the Sentinels when the cluster has
them. No Celery here: a submission is one LPUSH."""
from __future__ import annotations

import time

from pvc.core import redis_client
from pvc.core.config import Config
from pvc.core.errors import Unavailable
from pvc.core.models import Operation
from pvc.operations.registry import queue_for
from tasks import wire

FAILOVER_WAIT = 10.0   # seconds a submission keeps asking the Sentinels for a master


def submit(cfg: Config, op: Operation) -> None:
    """Send the operation's message. A lone Redis that does not answer is down: said within
    a second. With Sentinels the broker may be failing over (its master declared down after
    a few seconds, then a replica promoted, which answers writes with READONLY until then):
    asked again for up to FAILOVER_WAIT."""
    deadline = time.monotonic() + (FAILOVER_WAIT if cfg.cluster.redis.sentinels else 0.0)
    while True:
        try:
            _send(cfg, op)
            return
        except (OSError, redis_client.ReplyError) as e:
            if time.monotonic() >= deadline:
                raise Unavailable(f"cannot reach Redis {redis_client.where(cfg)}: "
                                  f"{_first_line(e)}") from None
            time.sleep(0.5)   # the Sentinels elect a new master meanwhile


def _send(cfg: Config, op: Operation) -> None:
    queue = queue_for(op.node)
    payload = wire.message(
        op.task, op.id, [op.target_id, op.id], queue,
        # what Flower shows as the task's arguments: names, not only ids
        argsrepr=f"{op.kind} {op.target} (id {op.target_id}), operation {op.id}",
        kwargsrepr=f"requested by {op.requested_by}" + (f": {op.reason}" if op.reason else ""))
    host, port = redis_client.master_address(cfg)
    redis_client.ask(host, port, cfg.redis_password(),
                     ["SELECT", str(cfg.cluster.redis.broker_db)], ["LPUSH", queue, payload])


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
