"""The systemd units: `systemd-analyze verify` (works without systemd as PID 1) finds nothing
to say about any of them, as the installer writes them; their order and bounds."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pvc.core.config import NodeConfig
from pvc.install import installer, units
from tests.conftest import ROOT

VENV = str(ROOT / ".venv")


def rendered(tmp: Path, names: list[str] | None = None, budget: float = 900.0) -> list[Path]:
    """The units as installed with this checkout's venv (verify wants real executables)."""
    paths = units.Paths(venv=VENV, config=str(tmp / "pvc.yaml"),
                        flower_config=str(tmp / "flowerconfig.py"))
    out = []
    for name in names or units.names():
        (tmp / name).write_text(units.render(name, paths, budget))
        out.append(tmp / name)
    return out


def verify(files: list[Path]) -> str:
    """Everything systemd-analyze says (it reports many mistakes with exit code 0: any
    line is a failure)."""
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=yes",
                          *map(str, files)], capture_output=True, text=True, timeout=60,
                         cwd=files[0].parent)
    return (res.stdout + res.stderr).strip() + ("" if res.returncode == 0 else
                                                f"\n(exit {res.returncode})")


def test_the_units_are_the_ones_the_installer_knows() -> None:
    assert units.names() == sorted(["pvc.target", "pvc-node.service", "pvc-worker.service",
                                    "pvc-tailer.service", "pvc-flower.service",
                                    "pvc-flush.service"])
    assert set(units.ENABLED + units.COORDINATOR_ONLY + units.OPT_IN) == set(units.names())


def test_every_unit_passes_systemd_analyze_verify_silently(tmp_path: Path) -> None:
    assert verify(rendered(tmp_path)) == ""


@pytest.mark.parametrize("mistake,said", [
    (("Type=oneshot", "Type=oneshott"), "Failed to parse service type"),
    (("RemainAfterExit=yes", "RemainAfterExit=yes\nExecPreStart=/bin/true"), "Unknown key"),
    (("TimeoutStopSec=", "TimeoutStopSec=30 minutes please\n#"), "Failed to parse"),
])
def test_the_check_catches_what_systemd_only_prints(tmp_path: Path, mistake: tuple[str, str],
                                                     said: str) -> None:
    [unit] = rendered(tmp_path, ["pvc-flush.service"])
    unit.write_text(unit.read_text().replace(*mistake, 1))
    assert said in verify([unit])


def test_the_flush_unit_runs_between_the_daemons_start_and_stop(tmp_path: Path) -> None:
    [unit] = rendered(tmp_path, ["pvc-flush.service"], budget=1200)
    text = unit.read_text()
    assert "After=pvc-node.service pvc-worker.service" in text   # so it stops before them
    assert "TimeoutStopSec=1230s" in text                         # the budget and a margin
    [stop] = units.commands(text, "ExecStop")
    [start] = units.commands(text, "ExecStart")
    assert stop.endswith("system shutdown") and f"{VENV}/bin/pvc" in stop
    assert "system boot" in start
    assert "PartOf=pvc.target" in text and "WantedBy=pvc.target" in text
    assert "pvc-flush.service" not in units.ENABLED              # opt-in


def test_every_service_belongs_to_the_target_and_restarts_on_failure() -> None:
    for name in units.names():
        text = (units.SOURCE / name).read_text()
        if name.endswith(".target"):
            assert "WantedBy=multi-user.target" in text
            continue
        assert "PartOf=pvc.target" in text and "WantedBy=pvc.target" in text, name
        if name != "pvc-flush.service":
            assert "Restart=on-failure" in text, name


def test_install_dry_run_says_everything_and_does_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    target = installer.Target(tmp_path)
    installer.carry_out(installer.install_plan(target), True, said.append)
    assert list(tmp_path.iterdir()) == []
    assert said[0].startswith("would create the venv ")
    assert any("pvc-flush.service" in s for s in said)
    assert installer.stop_budget(target) == NodeConfig().stop_budget
