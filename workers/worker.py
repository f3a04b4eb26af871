"""pvc-worker: this node's Celery worker, consuming only the queue pvc.node.<name>."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

from pvc.observe import nodelog
from pvc.operations.registry import queue_for
from workers.common import load_config

log = logging.getLogger("pvc-worker")


def main(argv: list[str] | None = None) -> None:
    cfg = load_config("pvc node worker", argv)
    # Pool processes (prefork) load the node context from the same file.
    os.environ["PVC_CONFIG"] = os.path.abspath(cfg.source)

    from celery.signals import (
        worker_init,
        worker_process_init,
        worker_process_shutdown,
        worker_ready,
        worker_shutdown,
    )
    from celery.worker import state

    from tasks.app import configure, refuse_remote_control
    from tasks.context import node_context
    from tasks.watchdog import EXIT_STALLED, ConsumerWatchdog, quiet_broker_hiccups

    app = configure(cfg)
    refuse_remote_control()
    quiet_broker_hiccups()
    watchdog = ConsumerWatchdog(cfg, lambda: bool(state.active_requests or
                                                  state.reserved_requests))

    logs: list[nodelog.NodeLogHandler] = []

    def connect(**_kw: object) -> None:
        # connect ZooKeeper and libvirt before the first task, not during it
        logs.append(nodelog.attach(node_context().cluster, "worker"))   # `pvc node log`

    def flush_log(**_kw: object) -> None:
        for handler in logs:
            nodelog.detach(handler)

    prefork = cfg.node.worker_pool == "prefork"
    if prefork:   # each pool process has its own context
        worker_init.connect(_share_with_the_pool, weak=False)
        worker_process_init.connect(connect, weak=False)
        worker_process_shutdown.connect(flush_log, weak=False)
    else:         # one process: its task threads share one context
        worker_init.connect(connect, weak=False)
        worker_shutdown.connect(flush_log, weak=False)
    worker_ready.connect(lambda **_kw: watchdog.start(), weak=False)
    worker_shutdown.connect(lambda **_kw: watchdog.stop(), weak=False)
    try:
        _run(app, cfg.node.name, cfg.node.worker_pool, cfg.node.worker_concurrency)
    finally:
        if watchdog.fired.is_set():
            sys.exit(EXIT_STALLED)


def _share_with_the_pool(**_kw: object) -> None:
    """Before the pool forks: what every pool process loads is loaded once, here (libvirt's
    bindings), and the collector leaves the parent's objects alone (gc.freeze), so the
    children share those pages instead of each copying them (measured by bench_memory)."""
    import gc
    import importlib
    importlib.import_module("pvc.hypervisor.adapter")   # libvirt, for every pool process
    gc.freeze()


def _run(app: Any, name: str, pool: str, concurrency: int) -> None:
    app.worker_main([
        # pvc.default: what was sent without a queue (by hand) is refused or forwarded there
        "worker", "--queues", f"{queue_for(name)},pvc.default", "--hostname", f"{name}@%h",
        "--concurrency", str(concurrency), "--pool", pool,
        "--without-mingle", "--without-gossip", "--loglevel", "INFO",
    ])


if __name__ == "__main__":
    main()
