"""The base of every pvc task: renews its broker lease while it runs and reports progress as
Celery task state (so Flower shows it)."""
from __future__ import annotations

import logging
from typing import Any

from celery import Task

from pvc.core.errors import PvcError, Unavailable
from tasks.app import LEASE_SECONDS
from tasks.lease import Lease

log = logging.getLogger(__name__)


class PvcTask(Task):
    abstract = True
    autoretry_for = (Unavailable,)
    retry_backoff = 1
    retry_backoff_max = 30
    max_retries = 10

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # kombu's virtual transports keep the delivery tag in the message properties
        properties = getattr(self.request, "properties", None) or {}
        tag = properties.get("delivery_tag")
        with Lease(self.app.conf.broker_url, tag, LEASE_SECONDS):
            return super().__call__(*args, **kwargs)

    def report(self, meta: dict[str, Any]) -> None:
        """Progress as Celery task state (result backend) and as a task event, which is what
        Flower listens to: it shows the task in state PROGRESS with these fields."""
        if self.request.id and not self.request.called_directly:
            self.update_state(state="PROGRESS", meta=meta)
            self.send_event("task-progress", **{k: v for k, v in meta.items() if k != "state"})

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        """A crashed task never leaves its operation `running`: record the failure."""
        op_id = args[1] if len(args) > 1 else task_id
        try:
            from pvc.core import states
            from pvc.operations import records
            from tasks.context import node_context
            cluster = node_context().cluster
            if cluster.operation(op_id).state not in states.OP_TERMINAL:
                error = str(exc) if isinstance(exc, PvcError) else f"internal error: {exc!r}"
                records.finish(cluster, op_id, states.OpState.FAILED, error=error)
        except Exception:  # the safety net must not raise over the original failure
            log.exception("could not record the failure of operation %s", op_id)
