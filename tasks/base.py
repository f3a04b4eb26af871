"""The base of every pvc task: renews its broker lease while it runs and reports progress as
Celery task state (so Flower shows it)."""
from __future__ import annotations

from typing import Any

from celery import Task

from pvc.errors import Unavailable
from tasks.app import LEASE_SECONDS
from tasks.lease import Lease


class PvcTask(Task):
    abstract = True
    autoretry_for = (Unavailable,)
    retry_backoff = 1
    retry_backoff_max = 30
    max_retries = 10

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tag = (self.request.delivery_info or {}).get("delivery_tag") if self.request else None
        with Lease(self.app.conf.broker_url, tag, LEASE_SECONDS):
            return super().__call__(*args, **kwargs)

    def report(self, meta: dict[str, Any]) -> None:
        if self.request.id and not self.request.called_directly:
            self.update_state(state="PROGRESS", meta=meta)
