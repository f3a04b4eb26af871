"""pvc-tailer: follows the serial console logs of the VMs running on this node."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from pvc.errors import PvcError
from pvc.tailer import Tailer
from workers.common import load_config

log = logging.getLogger("pvc-tailer")


def main(argv: list[str] | None = None) -> None:
    cfg = load_config("pvc console tailer", argv)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        tailer = Tailer(cfg)
        tailer.start()
    except (PvcError, OSError) as e:
        log.error("cannot start: %s", e)
        sys.exit(1)
    stop.wait()
    tailer.stop()


if __name__ == "__main__":
    main()
