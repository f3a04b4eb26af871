"""`pvc system install` for real into a temporary root (a venv with pvc from this checkout,
the configuration, the units, enabled with `systemctl --root`), then `uninstall`."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from tests.conftest import run_pvc


def test_install_into_a_root_then_uninstall(tmp_path: Path) -> None:
    root = tmp_path / "root"
    res = run_pvc("system", "install", "--root", str(root), timeout=600)
    assert res.returncode == 0, res.stderr
    assert "pvc-flush.service is installed but not enabled" in res.stdout
    venv = root / "opt/pvc/venv"
    units = root / "etc/systemd/system"
    # the installed pvc runs
    out = subprocess.run([str(venv / "bin/pvc"), "system", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "shutdown" in out.stdout, out.stderr
    # secrets stay private
    for private in (root / "etc/pvc/pvc.yaml", root / "etc/pvc/flowerconfig.py"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert stat.S_IMODE((root / "etc/pvc").stat().st_mode) == 0o700
    # enabled as systemctl enable does it; the flush unit only installed
    wants = {p.name for p in (units / "pvc.target.wants").iterdir()}
    assert wants == {"pvc-node.service", "pvc-worker.service", "pvc-tailer.service"}
    assert os.readlink(units / "multi-user.target.wants/pvc.target") == \
        "/etc/systemd/system/pvc.target"
    assert (units / "pvc-flush.service").exists()
    assert f"ExecStart={venv}/bin/pvc-node --config {root}/etc/pvc/pvc.yaml" in \
        (units / "pvc-node.service").read_text()
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", "--recursive-errors=yes",
                             *sorted(str(p) for p in units.glob("pvc*.*") if p.is_file())],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify.stderr
    # installing again keeps the configuration as the operator edited it
    (root / "etc/pvc/pvc.yaml").write_text("# edited\n")
    again = run_pvc("system", "install", "--root", str(root), timeout=600)
    assert again.returncode == 0 and "keep the configuration" in again.stdout
    assert (root / "etc/pvc/pvc.yaml").read_text() == "# edited\n"

    res = run_pvc("system", "uninstall", "--root", str(root))
    assert res.returncode == 0, res.stderr
    assert not venv.exists() and not list(units.glob("pvc*"))
    assert not (units / "pvc.target.wants").exists() or \
        not list((units / "pvc.target.wants").iterdir())
    assert (root / "etc/pvc/pvc.yaml").read_text() == "# edited\n"     # kept
