"""pvc-tailer: follows the serial console logs of the VMs running on this node."""
from __future__ import annotations

import logging
import sys
import threading

from pvc.console.tailer import Tailer
from pvc.core.errors import PvcError
from pvc.observe import nodelog
from workers.common import load_config, stop_on_signals

log = logging.getLogger("pvc-tailer")


def main(argv: list[str] | None = None) -> None:
    cfg = load_config("pvc console tailer", argv)
    stop = threading.Event()
    stop_on_signals(stop.set, log)
    try:
        tailer = Tailer(cfg)
        logs = nodelog.attach(tailer.cluster, "tailer")
        tailer.start()
    except (PvcError, OSError) as e:
        log.error("cannot start: %s", e)
        sys.exit(1)
    stop.wait()
    nodelog.detach(logs)
    tailer.stop()


if __name__ == "__main__":
    main()
