"""Bad input through the CLI against a sandbox: one line on stderr, a non-zero exit, nothing
changed. The cases that gave tracebacks or silent acceptance, and a slice of generated input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import Pvc

pytestmark = pytest.mark.e2e


def vm_xml(name: str, memory: str = "16", unit: str = "MiB") -> str:
    return (f"<domain type='kvm'><name>{name}</name><memory unit='{unit}'>{memory}</memory>"
            "<vcpu>1</vcpu><os><type>hvm</type></os></domain>")


def state(pvc: Pvc) -> str:
    """What the cluster holds, to prove a refusal changed nothing."""
    vms = sorted((v["name"], v["state"], v["node"]) for v in pvc.json("vm", "list"))
    return json.dumps([vms, len(pvc.json("task", "list", "--limit", "100000"))])


@pytest.mark.parametrize("args, expected", [
    (["node", "info", ""], "an empty name is not a valid node reference"),
    (["node", "info", ".."], "'..' is not a valid node reference"),
    (["vm", "info", "."], "'.' is not a valid VM reference"),
    (["vm", "info", "../vms"], "'../vms' is not a valid VM reference"),
    (["task", "show", "../operations"], "is not a valid operation id"),
    (["vm", "migrate", "demo1", "--timeout", "nan"], "'nan' is not a finite number"),
    (["vm", "start", "demo1", "--wait", "--timeout", "inf"], "inf is not in the range"),
    (["task", "watch", "x1", "--wait-timeout", "nan"], "'nan' is not a finite number"),
    (["task", "list", "--limit", "-1"], "-1 is not in the range"),
    (["vm", "list", "--state", "bogus"], "'bogus' is not one of 'start', 'stop', 'disable'"),
])
def test_bad_arguments_are_one_line(pvc: Pvc, args: list[str], expected: str) -> None:
    before = state(pvc)
    assert expected in pvc.error(*args)
    assert state(pvc) == before


def test_bad_definitions_are_one_line(pvc: Pvc, tmp_path: Path) -> None:
    before = state(pvc)
    cases = {
        "latin1.xml": (vm_xml("café").encode("latin-1"), "not UTF-8 text"),
        "nan.xml": (vm_xml("nanvm", "nan").encode(), "must be a positive number"),
        "huge.xml": (vm_xml("huge").replace("<os>", "<description>" + "x" * 3_000_000
                                            + "</description><os>").encode(),
                     "the limit is 256 KiB"),
        "absurd.xml": (vm_xml("absurd", str(10 ** 17)).encode(), "more than any machine"),
        "toobig.xml": (vm_xml("toobig", "100", "GiB").encode(), "the largest node has"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert expected in pvc.error("vm", "define", str(path)), name
    assert state(pvc) == before


def test_start_checks_the_nodes_memory_and_a_flush_names_what_it_parks(pvc: Pvc,
                                                                        tmp_path: Path) -> None:
    """Each node has 3072 MiB: three 2000 MiB VMs take one node each, a fourth finds no
    room, and a flush of a node has nowhere to put its big VM: it is parked, by name."""
    big = [f"big{i}" for i in range(4)]
    for name in big:
        path = tmp_path / f"{name}.xml"
        path.write_text(vm_xml(name, "2000"))
        pvc("vm", "define", str(path))
    try:
        for name in big[:3]:
            pvc("vm", "start", name, "--wait")
        placed = {pvc.json("vm", "info", n)["node"] for n in big[:3]}
        assert placed == {"hv1", "hv2", "hv3"}
        assert "cannot place VM big3" in pvc.error("vm", "start", "big3")
        on_hv1 = next(n for n in big[:3] if pvc.json("vm", "info", n)["node"] == "hv1")
        out = pvc("node", "flush", "hv1", "--wait").stdout
        assert f"1 shut down to start on unflush ({on_hv1})" in out
        pvc("node", "unflush", "hv1", "--wait")
        assert pvc.json("vm", "info", on_hv1)["running_on"] == ["hv1"]
    finally:
        for name in big:
            pvc("vm", "stop", name, "--wait", ok=False)
            pvc("vm", "undefine", name, ok=False)


# A slice of the generated-input tier through the real CLI (each call is a process).
CLI = settings(max_examples=12, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])


@CLI
@given(ref=st.text(min_size=0, max_size=20))
def test_generated_references_through_the_cli(pvc: Pvc, ref: str) -> None:
    if ref.startswith("-") or "\x00" in ref:
        return   # an option to click, or not passable as a process argument
    res = pvc("vm", "info", ref, ok=False)
    if res.returncode == 0:
        assert json.loads(pvc("vm", "info", ref, "--format", "json").stdout)["name"]
        return
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("error: ")
