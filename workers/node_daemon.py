"""pvc-node: the node daemon (registration, reconcile, keepalive, coordinator election)."""
from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from pvc.daemon import NodeDaemon
from pvc.errors import PvcError
from workers.common import load_config

log = logging.getLogger("pvc-node")


def main(argv: list[str] | None = None) -> None:
    cfg = load_config("pvc node daemon", argv)
    daemon = NodeDaemon(cfg)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
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
