"""What every long-running process does first: find and load its configuration, set up logs."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType
from typing import Callable

from pvc.core import config as configmod
from pvc.core.config import Config
from pvc.core.errors import PvcError


def load_config(description: str, argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="node configuration file (default: $PVC_CONFIG or "
                                         "/etc/pvc/pvc.yaml)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = configmod.load(configmod.locate(args.config))
    except PvcError as e:
        sys.exit(f"error: {e}")
    for warning in cfg.warnings:
        logging.getLogger("pvc").warning("%s: %s", cfg.source, warning)
    if cfg.exposed_secrets:
        sys.exit(f"error: {cfg.source} holds a secret and is readable by others: "
                 f"chmod 600 {cfg.source}")
    if not cfg.is_node:
        sys.exit(f"error: {cfg.source}: node.name is not set; a node process needs a node "
                 "configuration")
    return cfg


def stop_on_signals(stop: Callable[[], None], log: logging.Logger) -> None:
    """SIGTERM (systemd, `pvc sandbox down`) and SIGINT end the process cleanly."""
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
