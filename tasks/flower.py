"""Flower for pvc: the dashboard, read-only.

Flower can terminate, revoke and submit tasks, restart pools and move queues between workers;
any of these can corrupt an operation (a terminated flush left its node `flushing`). pvc runs
Flower with its own `read_only` option (no buttons; its control API refuses) and, since that
option leaves task submission open, removes every handler that changes anything before it
starts, and /metrics (unauthenticated in Flower). The workers refuse
the same remote-control commands themselves (tasks.app.refuse_remote_control), whoever
sends them.

    python -m tasks.flower --conf=FLOWERCONFIG      (the app configures itself from $PVC_CONFIG)
"""
from __future__ import annotations

import sys
from typing import Any

# Flower's paths that change something (tasks, workers, pools, queues) or are not
# authenticated (/metrics).
REMOVED_PATHS = ("/api/worker/shutdown", "/api/worker/pool", "/api/worker/queue",
                 "/api/task/apply", "/api/task/async-apply", "/api/task/send-task",
                 "/api/task/abort", "/api/task/timeout", "/api/task/rate-limit",
                 "/api/task/revoke", "/metrics")

def _pattern(handler: Any) -> str:
    regex = getattr(handler, "regex", None)
    return regex.pattern if regex is not None else str(handler[0])


def read_only() -> list[str]:
    """Remove Flower's changing handlers; returns the paths removed."""
    import flower.urls
    removed = [_pattern(h) for h in flower.urls.handlers
               if _pattern(h).startswith(REMOVED_PATHS)]
    flower.urls.handlers[:] = [h for h in flower.urls.handlers
                               if not _pattern(h).startswith(REMOVED_PATHS)]
    return removed


def main() -> None:
    read_only()
    from celery.bin.celery import main as celery_main
    sys.argv = ["celery", "-A", "tasks.app", "flower", *sys.argv[1:]]
    celery_main()


if __name__ == "__main__":
    main()
