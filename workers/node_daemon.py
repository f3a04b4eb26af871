"""pvc-node: the node daemon (registration, reconcile, keepalive, coordinator election)."""
from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Callable

from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.core.errors import PvcError
from pvc.node.context import NodeContext
from pvc.node.daemon import NodeDaemon
from pvc.observe import nodelog
from pvc.operations import sweep
from pvc.operations.requests import Request, abandon
from workers.common import load_config, stop_on_signals

if TYPE_CHECKING:
    from pvc.observe.exporter import MetricsExporter

log = logging.getLogger("pvc-node")


def main(argv: list[str] | None = None) -> None:
    cfg = load_config("pvc node daemon", argv)
    try:
        ctx = NodeContext(cfg)
    except PvcError as e:
        log.error("cannot start: %s", e)
        sys.exit(1)
    logs = nodelog.attach(ctx.cluster, "node")   # `pvc node log` from here on
    daemon = NodeDaemon(cfg, ctx)
    daemon.duties.append(lost_operations(cfg))
    if cfg.cluster.database.enabled:
        daemon.duties.append(database_follows(cfg))
    if cfg.cluster.fencing.enabled:
        daemon.duties.append(fence_dead_nodes(cfg))
    if cfg.cluster.metrics.enabled and daemon.coordinator:
        daemon.services.register(metrics_exporter(cfg, daemon))
    stop_on_signals(daemon.stop, log)
    try:
        daemon.start()
    except PvcError as e:
        log.error("cannot start: %s", e)
        nodelog.detach(logs)
        daemon.shutdown()
        sys.exit(1)
    try:
        daemon.run()
    finally:
        nodelog.detach(logs)
        daemon.shutdown()


def lost_operations(cfg: Config) -> Callable[[Cluster], str]:
    """The sweep of operations whose broker message was lost (it needs the broker)."""
    from tasks.broker import RedisBroker
    broker = RedisBroker(cfg)
    ops = cfg.cluster.operations

    def lost(cluster: Cluster) -> str:
        return sweep.lost_operations(cluster, broker, ops.lost_after, ops.max_resends)
    return lost


def metrics_exporter(cfg: Config, daemon: NodeDaemon) -> "MetricsExporter":
    """The primary's metrics endpoint, with the broker's queue lengths (it needs the broker)
    and the DNS aggregator's figures. Imported only where it runs: prometheus_client is a
    sixth of a daemon's memory."""
    from pvc.observe.exporter import MetricsExporter
    from tasks.broker import RedisBroker
    assert daemon.ctx is not None
    return MetricsExporter(daemon.ctx.cluster, cfg, RedisBroker(cfg).queue_lengths,
                           lambda: daemon.aggregator)


def database_follows(cfg: Config) -> Callable[[Cluster], str]:
    """The primary's duty: the database leader follows the primary (a `db.switchover`)."""
    from pvc.coordinator import switchover
    from tasks.client import submit

    def follow(cluster: Cluster) -> str:
        req = switchover.database_follows(cluster, cfg, cfg.node.name)
        if req is None:
            return ""
        try:
            submit(cfg, req.op)
        except PvcError as e:
            abandon(cluster, req.op, f"not submitted: {e}")
            return f"could not ask for the database leader to follow: {e}"
        return f"the database leader follows the primary: operation {req.op.id}"
    return follow


def fence_dead_nodes(cfg: Config) -> Callable[[Cluster], str]:
    """The primary's duty: power off nodes that died, then start their VMs elsewhere."""
    from pvc.node import fencing
    from tasks.client import submit
    f = cfg.cluster.fencing
    watch = fencing.FenceWatch(cfg.node.name, f.intervals, f.saving_throws)

    def fence(cluster: Cluster) -> str:
        def sent(req: Request) -> None:
            try:
                submit(cfg, req.op)
            except PvcError as e:
                abandon(cluster, req.op, f"not submitted: {e}")
        return fencing.fence_duty(cluster, cfg, watch, sent)
    return fence


if __name__ == "__main__":
    main()
