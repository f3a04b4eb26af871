"""pvc-flush.service's own command lines (ExecStop at a node's stop, ExecStart at its start), run
as systemd would run them, against a sandbox: the node ends flushed, then ready, with every VM
running exactly once; a VM that cannot move is shut down cleanly and starts again at boot; a
whole-cluster shutdown (units stopped in reverse order) moves nothing and every VM comes back
where it was."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from pvc.install import units
from pvc.sandbox import sandbox as sb
from tests.conftest import ROOT
from tests.faults.conftest import Faults, settled_sandbox

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def f() -> Iterator[Faults]:
    with settled_sandbox("test-flush-unit", "1400", 6) as faults:
        yield faults


def unit_command(f: Faults, node: str, key: str) -> list[str]:
    """The flush unit's ExecStart/ExecStop for node, as installed with this checkout's venv
    and the node's configuration."""
    layout = sb.Layout(Path(f.pvc.env["PVC_SANDBOX_DIR"]), int(f.pvc.offset))
    paths = units.Paths(venv=str(ROOT / ".venv"), config=str(layout.node_config(node)))
    [line] = units.commands(units.render("pvc-flush.service", paths), key)
    return shlex.split(line)


def systemd_runs(f: Faults, node: str, key: str) -> subprocess.CompletedProcess:
    res = subprocess.run(unit_command(f, node, key), capture_output=True, text=True,
                         timeout=600, env={"PATH": "/usr/bin:/bin"})   # systemd's bare env
    assert "Traceback" not in res.stderr, res.stderr
    return res


def on(f: Faults, node: str) -> list[str]:
    return sorted(vm for vm, nodes in f.where().items() if nodes == [node])


def state(f: Faults, node: str) -> str:
    return f.pvc.json("node", "info", node)["domain_state"]


def test_stop_flushes_the_node_and_start_brings_its_vms_back(f: Faults) -> None:
    home = on(f, "hv1")
    assert home
    stop = systemd_runs(f, "hv1", "ExecStop")
    assert stop.returncode == 0, stop.stderr
    assert f"{len(home)} moved" in stop.stdout
    assert state(f, "hv1") == "flushed" and on(f, "hv1") == []
    f.settled()                                   # every VM runs once, elsewhere
    start = systemd_runs(f, "hv1", "ExecStart")
    assert start.returncode == 0, start.stderr
    assert state(f, "hv1") == "ready" and on(f, "hv1") == home
    f.settled()


def test_a_vm_that_cannot_move_is_shut_down_and_starts_again_at_boot(f: Faults,
                                                                       tmp_path: Path) -> None:
    xml = tmp_path / "pinned.xml"
    xml.write_text(sb.demo_xml("pinned", "test", 7))
    f.pvc("vm", "define", str(xml), "--node", "hv2", "--node-limit", "hv2")
    f.pvc("vm", "start", "pinned", "--wait")
    try:
        stop = systemd_runs(f, "hv2", "ExecStop")
        assert stop.returncode == 0, stop.stderr
        assert "shut down to start on unflush (pinned)" in stop.stdout
        assert state(f, "hv2") == "flushed" and "pinned" not in f.where()
        vm = f.pvc.json("vm", "info", "pinned")
        assert (vm["state"], vm["autostart"], vm["node"]) == ("stop", True, "hv2")
        start = systemd_runs(f, "hv2", "ExecStart")
        assert start.returncode == 0, start.stderr
        assert f.where()["pinned"] == ["hv2"]
        f.settled()
    finally:
        f.pvc("vm", "stop", "pinned", "--wait", ok=False)
        f.pvc("vm", "undefine", "pinned", ok=False)


def test_a_whole_cluster_shutdown_moves_nothing_and_boot_brings_everything_back(
        f: Faults) -> None:
    before = f.where()
    f.pvc("cluster", "shutdown", "--reason", "power work")
    status = f.pvc.cluster_status()
    assert status["shutdown"]["reason"] == "power work"
    for node in reversed(f.nodes):                   # as the nodes go down, one by one
        stop = systemd_runs(f, node, "ExecStop")
        assert stop.returncode == 0, stop.stderr
        assert " 0 moved" in stop.stdout, stop.stdout
        assert "the whole cluster is going down" in stop.stderr
    assert f.where() == {}                           # nothing runs, nothing hopped
    for node in f.nodes:
        start = systemd_runs(f, node, "ExecStart")
        assert start.returncode == 0, start.stderr
    assert f.where() == before                       # each VM where it was, once
    status = f.pvc.cluster_status()
    assert status["shutdown"] is None
    f.settled()
