"""Submitting operations to their node's queue (used by the CLI)."""
from __future__ import annotations

from pvc.config import Config
from pvc.errors import Unavailable
from pvc.models import Operation
from pvc.operations import queue_for


def submit(cfg: Config, op: Operation) -> None:
    from kombu.exceptions import OperationalError

    from tasks.app import configure

    app = configure(cfg)
    try:
        app.send_task(op.task, args=[op.target_id, op.id], task_id=op.id,
                      queue=queue_for(op.node), retry=True,
                      retry_policy={"max_retries": 2, "interval_start": 0,
                                    "interval_step": 0.2, "interval_max": 0.5})
    except (OperationalError, OSError) as e:
        r = cfg.cluster.redis
        raise Unavailable(f"cannot reach Redis at {r.host}:{r.port}: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
