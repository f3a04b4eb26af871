"""pvc-worker: this node's Celery worker, consuming only the queue pvc.node.<name>."""
from __future__ import annotations

import logging
import os

from pvc.operations.registry import queue_for
from workers.common import load_config

log = logging.getLogger("pvc-worker")


def main(argv: list[str] | None = None) -> None:
    cfg = load_config("pvc node worker", argv)
    # Pool children load the node context from the same file.
    os.environ["PVC_CONFIG"] = os.path.abspath(cfg.source)

    from celery.signals import worker_process_init

    from tasks.app import configure, refuse_remote_control
    from tasks.context import node_context

    app = configure(cfg)
    refuse_remote_control()

    @worker_process_init.connect
    def _connect(**_kw: object) -> None:
        node_context()  # connect ZooKeeper and libvirt before the first task, not during it

    name = cfg.node.name
    app.worker_main([
        # pvc.default: what was sent without a queue (by hand) is refused or forwarded there
        "worker", "--queues", f"{queue_for(name)},pvc.default", "--hostname", f"{name}@%h",
        "--concurrency", str(cfg.node.worker_concurrency), "--pool", "prefork",
        "--without-mingle", "--without-gossip", "--loglevel", "INFO",
    ])


if __name__ == "__main__":
    main()
