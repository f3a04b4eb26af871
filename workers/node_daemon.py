"""pvc-node: the node daemon (registration, reconcile, keepalive, coordinator election)."""
from __future__ import annotations

import logging
import sys

from pvc.core.errors import PvcError
from pvc.node.daemon import NodeDaemon
from workers.common import load_config, stop_on_signals

log = logging.getLogger("pvc-node")


def main(argv: list[str] | None = None) -> None:
    cfg = load_config("pvc node daemon", argv)
    daemon = NodeDaemon(cfg)
    stop_on_signals(daemon.stop, log)
    try:
        daemon.start()
    except PvcError as e:
        log.error("cannot start: %s", e)
        daemon.shutdown()
        sys.exit(1)
    try:
        daemon.run()
    finally:
        daemon.shutdown()


if __name__ == "__main__":
    main()
