"""The systemd units in systemd/, as installed: the venv's and the configuration's paths, and
the flush unit's stop timeout from the node's stop budget."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "systemd"
DEFAULT_VENV = "/opt/pvc/venv"
DEFAULT_CONFIG = "/etc/pvc/pvc.yaml"
DEFAULT_FLOWER_CONFIG = "/etc/pvc/flowerconfig.py"
STOP_MARGIN = 30.0   # seconds past the stop budget before systemd kills the flush

# Enabled by the installer; pvc-flush.service is not (flush at stop is opt-in), and Flower
# only on coordinators.
ENABLED = ("pvc.target", "pvc-node.service", "pvc-worker.service", "pvc-tailer.service")
COORDINATOR_ONLY = ("pvc-flower.service",)
OPT_IN = ("pvc-flush.service",)


@dataclass(frozen=True)
class Paths:
    venv: str = DEFAULT_VENV
    config: str = DEFAULT_CONFIG
    flower_config: str = DEFAULT_FLOWER_CONFIG


def names() -> list[str]:
    return sorted(p.name for p in SOURCE.iterdir() if p.suffix in (".service", ".target"))


def render(name: str, paths: Paths, stop_budget: float | None = None) -> str:
    text = (SOURCE / name).read_text()
    text = text.replace(DEFAULT_VENV, paths.venv)
    text = text.replace(DEFAULT_FLOWER_CONFIG, paths.flower_config)
    text = text.replace(DEFAULT_CONFIG, paths.config)
    if stop_budget is not None and name in OPT_IN:
        text = re.sub(r"(?m)^TimeoutStopSec=.*$",
                      f"TimeoutStopSec={stop_budget + STOP_MARGIN:.0f}s", text)
    return text


def commands(unit_text: str, key: str) -> list[str]:
    """The command lines a unit gives for key (ExecStart, ExecStop), as systemd reads them."""
    return [line.split("=", 1)[1] for line in unit_text.splitlines()
            if line.startswith(key + "=")]
