"""`pvc system install` for real into a temporary root (a venv with pvc from this checkout,
the configuration, the units, enabled with `systemctl --root`), then `uninstall`."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from tests.conftest import ROOT, run_pvc


def files_naming(root: Path, text: str) -> list[str]:
    """Files under root whose bytes contain text."""
    needle = text.encode()
    return [str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


def test_install_into_a_root_then_uninstall(tmp_path: Path) -> None:
    root = tmp_path / "root"
    # a root as a real system has it: systemd's own units (what `verify --root` resolves)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    res = run_pvc("system", "install", "--root", str(root), timeout=600)
    assert res.returncode == 0, res.stderr
    assert "pvc-flush.service is installed but not enabled" in res.stdout
    venv = root / "opt/pvc/venv"
    units = root / "etc/systemd/system"
    # as if root were /: nothing names root or the checkout it was built from
    assert files_naming(root / "opt", str(root)) == []
    assert files_naming(root / "etc", str(root)) == []
    assert files_naming(root / "opt", str(ROOT)) == []
    assert (venv / "bin/pvc").read_text().splitlines()[0] == "#!/opt/pvc/venv/bin/python"
    # the installed pvc runs (its interpreter is a file of the tree, its pyvenv.cfg beside it)
    out = subprocess.run([str(venv / "bin/python"), "-m", "cli.main", "system", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "shutdown" in out.stdout, out.stderr
    # secrets stay private
    for private in (root / "etc/pvc/pvc.yaml", root / "etc/pvc/flowerconfig.py",
                    root / "etc/pvc/flower.yaml"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert stat.S_IMODE((root / "etc/pvc").stat().st_mode) == 0o700
    # enabled as systemctl enable does it; the flush unit only installed
    wants = {p.name for p in (units / "pvc.target.wants").iterdir()}
    assert wants == {"pvc-node.service", "pvc-worker.service", "pvc-tailer.service"}
    assert os.readlink(units / "multi-user.target.wants/pvc.target") == \
        "/etc/systemd/system/pvc.target"
    assert (units / "pvc-flush.service").exists()
    node_unit = (units / "pvc-node.service").read_text()
    assert "ExecStart=/opt/pvc/venv/bin/pvc-node --config /etc/pvc/pvc.yaml" in node_unit
    assert "After=zookeeper.service redis-server.service redis-sentinel.service " \
           "patroni.service" in node_unit          # a flush at stop keeps store and broker
    flower_unit = (units / "pvc-flower.service").read_text()
    assert "DynamicUser=yes" in flower_unit and "User=root" not in flower_unit
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "--man=no",
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
