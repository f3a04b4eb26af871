"""Submitting operations to their node's queue (used by the CLI)."""
from __future__ import annotations

import time
from typing import Any

from pvc.core.config import Config
from pvc.core.errors import Unavailable
from pvc.core.models import Operation
from pvc.operations.registry import queue_for

_apps: dict[str, Any] = {}


def client_app(cfg: Config) -> Any:
    """A Celery app for sending only (tasks are sent by name), one per broker."""
    from celery import Celery

    from tasks.app import settings
    conf = settings(cfg)
    # The CLI follows operations in ZooKeeper, never through Celery results: no backend, so a
    # Redis outage fails the send at once instead of retrying a result subscription.
    conf.pop("result_backend")
    # A CLI process sends no events: each would be one more "worker" name in Flower's event
    # state (and one more label in its metrics).
    conf["task_send_sent_event"] = False
    key = conf["broker_url"]
    if key not in _apps:
        app = Celery("pvc-client", set_as_current=False)
        app.conf.update(conf)
        _apps[key] = app
    return _apps[key]


FAILOVER_WAIT = 10.0   # seconds a submission keeps asking the Sentinels for a master


def submit(cfg: Config, op: Operation) -> None:
    """Send the operation's message. A lone Redis that does not answer is down: said within
    a second. With Sentinels the broker may be failing over (its master declared down after
    a few seconds, then a replica promoted): asked again for up to FAILOVER_WAIT."""
    from kombu.exceptions import OperationalError
    deadline = time.monotonic() + (FAILOVER_WAIT if cfg.cluster.redis.sentinels else 0.0)
    while True:
        try:
            _send(cfg, op)
            return
        except (OperationalError, OSError) as e:
            if time.monotonic() >= deadline:
                from pvc.core.redis_client import where
                raise Unavailable(f"cannot reach Redis {where(cfg)}: {_first_line(e)}") \
                    from None
            time.sleep(0.5)   # the Sentinels elect a new master meanwhile


def _send(cfg: Config, op: Operation) -> None:
    client_app(cfg).send_task(
        op.task, args=[op.target_id, op.id], task_id=op.id, queue=queue_for(op.node),
        # what Flower shows as the task's arguments: names, not only ids
        argsrepr=f"{op.kind} {op.target} (id {op.target_id}), operation {op.id}",
        kwargsrepr=f"requested by {op.requested_by}" + (f": {op.reason}" if op.reason else ""),
        retry=True, retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                                  "interval_max": 0.5})


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
