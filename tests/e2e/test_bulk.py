"""Many VMs in one command, through the CLI against the sandbox: define FILE..., and
start/stop/shutdown/restart VM... | --node | --all with per-VM results."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.e2e.conftest import on_a_terminal
from tests.e2e.test_cli import kvm_xml

pytestmark = pytest.mark.e2e
BULK = [f"bulk{i}" for i in range(6)]


@pytest.fixture
def bulk(pvc: Any, tmp_path: Path) -> Iterator[list[str]]:
    """Six stopped VMs, defined by one command; undefined afterwards."""
    files = []
    for name in BULK:
        (tmp_path / f"{name}.xml").write_text(kvm_xml(name))
        files.append(str(tmp_path / f"{name}.xml"))
    out = pvc("vm", "define", *files).stdout.splitlines()
    assert [line.split()[0] for line in out] == BULK
    yield BULK
    pvc("vm", "stop", *BULK, "--wait", "--yes", ok=False)
    for name in BULK:
        pvc("vm", "undefine", name, "--yes", ok=False)


def test_define_many_stores_none_when_one_is_refused(pvc: Any, tmp_path: Path) -> None:
    before = pvc.json("vm", "list")
    good, twin, bad = (tmp_path / n for n in ("good.xml", "twin.xml", "bad.xml"))
    good.write_text(kvm_xml("many1"))
    twin.write_text(kvm_xml("MANY1"))
    bad.write_text("<domain type='kvm'><name>x</name>")
    assert pvc.error("vm", "define", str(good), str(twin)) == (
        f"error: {twin}: a VM named 'many1' exists: 'MANY1' differs from it only in case "
        "(DNS names ignore case)")
    assert pvc.error("vm", "define", str(good), str(bad)).startswith(
        f"error: {bad}: malformed domain XML")
    assert pvc.json("vm", "list") == before


def test_start_and_stop_many_by_name_with_one_wait(pvc: Any, bulk: list[str]) -> None:
    started = pvc.json("vm", "start", *bulk, "--wait")
    assert {r["state"] for r in started["results"].values()} == {"done"}
    assert set(started["results"]) == set(bulk)
    nodes = [op["node"] for op in started["operations"]]
    assert len(nodes) == len(set(nodes)), "one operation per node"
    vms = pvc.vms()
    assert all(vms[n]["observed"] == "running" and len(vms[n]["running_on"]) == 1
               for n in bulk)
    assert {vms[n]["operation"] for n in bulk} == {""}   # each freed when done
    out = pvc("vm", "stop", *bulk, "--wait", "--yes")
    assert out.stdout.strip() == f"vm stop: {len(bulk)} done"
    vms = pvc.vms()
    assert {(vms[n]["state"], vms[n]["observed"]) for n in bulk} == {("stop", "stopped")}


def test_what_cannot_be_done_is_refused_by_name(pvc: Any, bulk: list[str]) -> None:
    pvc("vm", "start", bulk[0], "--wait")
    res = pvc("vm", "restart", *bulk[:3], "--wait", "--format", "json", ok=False)
    assert res.returncode == 1
    import json
    results = json.loads(res.stdout)["results"]
    assert results[bulk[0]]["state"] == "done"
    assert {results[n]["state"] for n in bulk[1:3]} == {"refused"}
    assert "its state is 'stop'" in results[bulk[1]]["message"]
    text = pvc("vm", "restart", *bulk[:2], "--wait", ok=False)
    assert text.returncode == 1 and text.stdout.strip() == "vm restart: 1 done, 1 refused"
    assert f"refused: {bulk[1]}: cannot restart VM {bulk[1]}" in text.stderr
    assert pvc.error("vm", "stop", bulk[0], "ghost", "--yes") == \
        "error: no VM named 'ghost'; nothing was changed"
    assert pvc.vms()[bulk[0]]["observed"] == "running"


def test_a_selection_asks_on_a_terminal_and_no_changes_nothing(pvc: Any,
                                                                bulk: list[str]) -> None:
    pvc("vm", "start", *bulk, "--wait")
    node = pvc.vms()[bulk[0]]["node"]
    code, out = on_a_terminal(["vm", "shutdown", "--node", node], answer="n")
    assert code == 130 and "Shutdown" in out and f"the VMs of {node}?" in out
    assert pvc.vms()[bulk[0]]["observed"] == "running"
    assert pvc.error("vm", "start", bulk[0], "--all") == \
        "error: give VM names, or --node NODE, or --all (see: pvc vm start --help)"


def test_without_wait_each_node_gets_one_operation(pvc: Any, bulk: list[str]) -> None:
    res = pvc.json("vm", "start", *bulk)
    ops = res["operations"]
    assert sum(len(op["args"]["vms"]) for op in ops) == len(bulk)
    for op in ops:
        shown = pvc.json("task", "watch", op["id"])
        assert shown["kind"] == "vms.start" and shown["state"] == "succeeded"
        assert set(shown["progress"]["items"]) == set(op["args"]["vms"].values())
    assert {pvc.vms()[n]["observed"] for n in bulk} == {"running"}
