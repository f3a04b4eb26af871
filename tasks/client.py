"""Submitting operations to their node's queue (used by the CLI)."""
from __future__ import annotations

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


def submit(cfg: Config, op: Operation) -> None:
    from kombu.exceptions import OperationalError
    try:
        client_app(cfg).send_task(
            op.task, args=[op.target_id, op.id], task_id=op.id, queue=queue_for(op.node),
            # what Flower shows as the task's arguments: names, not only ids
            argsrepr=f"{op.kind} {op.target} (id {op.target_id}), operation {op.id}",
            kwargsrepr=f"requested by {op.requested_by}"
                       + (f": {op.reason}" if op.reason else ""),
            retry=True, retry_policy=_retry_policy(cfg))
    except (OperationalError, OSError) as e:
        from pvc.core.redis_client import where
        raise Unavailable(f"cannot reach Redis {where(cfg)}: {_first_line(e)}") from None


def _retry_policy(cfg: Config) -> dict[str, float]:
    """A lone Redis that does not answer is down: say so within a second. With Sentinels it
    may be failing over (a master is declared down after 2 s, a replica promoted within
    about 2 more): keep asking them for the master long enough to ride that out."""
    if cfg.cluster.redis.sentinels:
        return {"max_retries": 12, "interval_start": 0, "interval_step": 0.5,
                "interval_max": 1.0}
    return {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
