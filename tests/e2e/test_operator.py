"""The operator's day on the shared sandbox, through the CLI: change a VM after define, the
cluster in maintenance, a cordoned node, lists that redraw on change, completion as the shell
asks for it, --version and help, confirmations on a terminal, output that pipes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import SANDBOX_ENV, LineReader, Pvc, on_a_terminal, wait_until
from tests.e2e.test_cli import console_file

pytestmark = pytest.mark.e2e


def xml(name: str, memory: int = 32, uuid: str = "") -> str:
    return (f"<domain type='kvm'><name>{name}</name>" + (f"<uuid>{uuid}</uuid>" if uuid else "")
            + f"<memory unit='MiB'>{memory}</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>\n")


@contextmanager
def defined(pvc: Pvc, tmp_path: Path, name: str, node: str = "hv1") -> Iterator[str]:
    """A VM of the test's own, undefined afterwards (whatever it was renamed to)."""
    path = tmp_path / f"{name}.xml"
    path.write_text(xml(name))
    uuid = pvc.json("vm", "define", str(path), "--node", node)["uuid"]
    try:
        yield uuid
    finally:
        pvc("vm", "stop", uuid, "--wait", "--yes")
        pvc("vm", "undefine", uuid, "--yes")


# ---------------------------------------------------------------------- change a VM

def test_modify_a_vm_from_a_file_and_restart_it(pvc: Pvc, tmp_path: Path) -> None:
    with defined(pvc, tmp_path, "op-mod") as uuid:
        shown = pvc("vm", "info", "op-mod", "--xml").stdout        # only the XML: it pipes
        assert shown.startswith("<domain") and shown.rstrip().endswith("</domain>")
        pvc("vm", "start", "op-mod", "--wait")
        bigger = tmp_path / "bigger.xml"
        bigger.write_text(shown.replace(">32<", ">48<"))
        out = pvc("vm", "modify", "op-mod", str(bigger), "--reason", "more memory").stdout
        assert "takes effect at its next start" in out
        info = pvc.json("vm", "info", "op-mod")
        assert info["memory"] == 48 and info["observed"] == "running"
        record = next(t for t in pvc.json("task", "list") if t["kind"] == "vm.modify"
                      and t["target"] == "op-mod")
        assert record["args"]["before"]["memory"] == 32
        assert record["args"]["after"]["memory"] == 48 and record["reason"] == "more memory"
        assert ">48<" in record["args"]["diff"] and record["created"].endswith("+00:00")
        assert '"memory": 48' in pvc("task", "show", record["id"]).stdout
        again = tmp_path / "again.xml"
        again.write_text(shown.replace(">32<", ">64<"))
        restarted = pvc.json("vm", "modify", "op-mod", str(again), "--restart", "--wait")
        assert (restarted["kind"], restarted["state"]) == ("vm.restart", "succeeded")
        assert pvc.json("vm", "info", "op-mod")["observed"] == "running"
        # refused, and nothing changed
        renamed = tmp_path / "renamed.xml"
        renamed.write_text(xml("op-other", 64, uuid))
        assert "pvc vm rename op-mod op-other" in pvc.error("vm", "modify", "op-mod",
                                                            str(renamed))
        other_uuid = tmp_path / "uuid.xml"
        other_uuid.write_text(xml("op-mod", 64, "00000000-0000-4000-8000-00000000abcd"))
        assert "cannot change a VM's UUID" in pvc.error("vm", "modify", "op-mod",
                                                        str(other_uuid))
        broken = tmp_path / "broken.xml"
        broken.write_text("<domain><name>op-mod")
        assert "malformed domain XML" in pvc.error("vm", "modify", "op-mod", str(broken))
        assert "give either XMLFILE or --editor" in pvc.error("vm", "modify", "op-mod")
        assert pvc.json("vm", "info", "op-mod")["memory"] == 64


def test_modify_in_an_editor_shows_the_change_and_asks(pvc: Pvc, tmp_path: Path) -> None:
    with defined(pvc, tmp_path, "op-edit"):
        editor = {"EDITOR": "sed -i s/>32</>40</"}
        code, out = on_a_terminal(["vm", "modify", "op-edit", "--editor"], answer="n",
                                  env=editor)
        assert code == 130 and "Apply this change to op-edit?" in out
        assert '-<domain' in out and '+<domain' in out and ">40<" in out   # the diff shown
        assert pvc.json("vm", "info", "op-edit")["memory"] == 32      # no: nothing applied
        code, out = on_a_terminal(["vm", "modify", "op-edit", "--editor"], answer="y",
                                  env=editor)
        assert code == 0, out
        assert pvc.json("vm", "info", "op-edit")["memory"] == 40
        res = pvc("vm", "modify", "op-edit", "--editor", ok=False, env_extra={"EDITOR": "true"})
        assert res.returncode == 0 and "no change" in res.stderr


def test_meta_and_rename(pvc: Pvc, tmp_path: Path) -> None:
    with defined(pvc, tmp_path, "op-meta") as uuid:
        record = pvc.json("vm", "meta", "op-meta", "--autostart", "--node-limit", "hv1,hv2",
                          "--migration-method", "shutdown", "--reason", "pinned")
        assert record["kind"] == "vm.meta" and record["args"]["after"]["node_limit"] == [
            "hv1", "hv2"]
        info = pvc.json("vm", "info", "op-meta")
        assert (info["autostart"], info["node_limit"], info["migration_method"]) == (
            True, ["hv1", "hv2"], "shutdown")
        assert "unknown node(s): hv9" in pvc.error("vm", "meta", "op-meta", "--node-limit",
                                                   "hv9")
        assert "nothing to change" in pvc.error("vm", "meta", "op-meta")
        assert "'bogus' is not one of 'mem'" in pvc.error("vm", "meta", "op-meta", "--selector",
                                                          "bogus")
        pvc("vm", "start", "op-meta", "--wait")
        assert "stop it first" in pvc.error("vm", "rename", "op-meta", "op-meta2")
        pvc("vm", "stop", "op-meta", "--wait", "--yes")
        assert pvc("vm", "rename", "op-meta", "op-meta2").stdout.strip() == \
            "op-meta is now op-meta2"
        assert pvc.json("vm", "info", "op-meta2")["uuid"] == uuid
        assert "<name>op-meta2</name>" in pvc("vm", "info", "op-meta2", "--xml").stdout
        assert "no VM named 'op-meta'" in pvc.error("vm", "info", "op-meta")
        assert "already exists" in pvc.error("vm", "rename", "op-meta2", "demo1")


# ---------------------------------------------------------------------- maintenance, cordon

def test_maintenance_is_said_first_by_every_command_and_shown_by_status(pvc: Pvc) -> None:
    pvc("cluster", "maintenance", "on", "--reason", "rack move")
    try:
        for args in (["vm", "list"], ["node", "list", "--format", "json"], ["task", "list"]):
            first = pvc(*args).stderr.splitlines()[0]
            assert first.startswith("MAINTENANCE:") and "rack move" in first
        held = pvc.json("cluster", "status")["maintenance"]
        assert held["reason"] == "rack move" and "@" in held["by"]
        assert held["since"].endswith("+00:00")
        assert "maintenance ON by" in pvc("cluster", "status").stdout
        assert "already in maintenance" in pvc("cluster", "maintenance", "on", ok=False).stderr
    finally:
        pvc("cluster", "maintenance", "off")
    assert pvc.json("cluster", "status")["maintenance"] is None
    assert "MAINTENANCE" not in pvc("vm", "list").stderr
    assert "not in maintenance" in pvc.error("cluster", "maintenance", "off")
    assert "'maybe' is not one of 'on', 'off'" in pvc.error("cluster", "maintenance", "maybe")


def test_a_cordoned_node_takes_no_new_vms(pvc: Pvc, tmp_path: Path) -> None:
    assert "cordoned" in pvc("node", "cordon", "hv3", "--reason", "fan noise").stdout
    try:
        hv3 = next(n for n in pvc.json("node", "list") if n["name"] == "hv3")
        assert hv3["cordoned"] is True
        assert pvc.json("node", "info", "hv3")["cordon"]["reason"] == "fan noise"
        assert "hv3 by" in pvc("cluster", "status").stdout
        with defined(pvc, tmp_path, "op-cord", node="hv1"):
            assert "cordoned" in pvc.error("vm", "migrate", "op-cord", "--target", "hv3")
        assert "already cordoned" in pvc.error("node", "cordon", "hv3")
    finally:
        pvc("node", "uncordon", "hv3")
    assert not next(n for n in pvc.json("node", "list") if n["name"] == "hv3")["cordoned"]
    assert "no node named 'hv9'" in pvc.error("node", "cordon", "hv9")


# ---------------------------------------------------------------------- confirmations

def test_disruptive_commands_ask_on_a_terminal_and_never_in_a_script(pvc: Pvc,
                                                                     tmp_path: Path) -> None:
    with defined(pvc, tmp_path, "op-ask"):
        pvc("vm", "start", "op-ask", "--wait")
        code, out = on_a_terminal(["vm", "stop", "op-ask"], answer="n")
        assert code == 130 and "Stop VM op-ask?" in out
        assert pvc.json("vm", "info", "op-ask")["observed"] == "running"
        code, out = on_a_terminal(["vm", "stop", "op-ask", "--wait", "--yes"])
        assert code == 0 and "[y/N]" not in out
        code, out = on_a_terminal(["vm", "undefine", "op-ask"], answer="n")
        assert code == 130 and "Undefine VM op-ask?" in out
        assert "op-ask" in pvc.vms()
    # the last node that takes VMs: its flush asks
    for n in ("hv2", "hv3"):
        pvc("node", "cordon", n)
    try:
        code, out = on_a_terminal(["node", "flush", "hv1"], answer="n")
        assert code == 130 and "last node that takes VMs" in out
        assert next(n for n in pvc.json("node", "list") if n["name"] == "hv1")[
            "domain_state"] == "ready"
    finally:
        for n in ("hv2", "hv3"):
            pvc("node", "uncordon", n)


# ---------------------------------------------------------------------- watch

def test_vm_list_watch_redraws_on_change_and_ctrl_c_leaves(pvc: Pvc, tmp_path: Path) -> None:
    with LineReader(["vm", "list", "--watch"]) as watch:
        wait_until("the first drawing", lambda: "demo1" in watch.line())
        with defined(pvc, tmp_path, "op-watch"):
            wait_until("op-watch drawn", lambda: watch.line().startswith("op-watch"))
        watch.proc.send_signal(signal.SIGINT)
        assert watch.ended(10) == 0


def test_node_list_watch_in_json_is_a_document_per_change(pvc: Pvc) -> None:
    with LineReader(["node", "list", "--watch", "--format", "json"]) as watch:
        first = json.loads(watch.line())
        assert {n["name"] for n in first} == {"hv1", "hv2", "hv3"}
        pvc("node", "cordon", "hv2")
        try:
            wait_until("the cordon drawn", lambda: any(
                n["cordoned"] for n in json.loads(watch.line()) if n["name"] == "hv2"))
        finally:
            pvc("node", "uncordon", "hv2")


# ---------------------------------------------------------------------- completion, help

def complete(shell: str, words: str) -> list[str]:
    """What pvc offers when the shell asks (as the sourced script does: bash and zsh give the
    index of the word completed, fish the word itself)."""
    cword = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    if shell == "fish":
        cword = "" if words.endswith(" ") else words.split()[-1]
    env = {**os.environ, **SANDBOX_ENV, "COMP_WORDS": words, "COMP_CWORD": cword,
           "_PVC_COMPLETE": f"{shell}_complete"}
    res = subprocess.run([str(ROOT / ".venv/bin/pvc")], env=env, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0 and not res.stderr, res.stderr
    return res.stdout.splitlines()


def test_completion_offers_the_clusters_names(pvc: Pvc) -> None:
    assert "plain,demo1" in complete("bash", "pvc vm start d")
    assert "plain,hv2" in complete("bash", "pvc node flush ")
    assert "plain,hv3" in complete("bash", "pvc vm migrate demo1 --target h")
    assert "plain,100" in complete("bash", "pvc network info ")
    op = pvc.json("node", "cordon", "hv1")["id"]        # an operation record to complete
    pvc("node", "uncordon", "hv1")
    assert f"plain,{op}" in complete("bash", f"pvc task show {op[:4]}")
    assert "plain,modify" in complete("bash", "pvc vm mod")
    zsh = complete("zsh", "pvc vm info demo")
    assert "demo1" in zsh and any("start" in line for line in zsh)      # value, then its state
    fish = complete("fish", "pvc node info hv")
    assert any(line.startswith("plain,hv1") for line in fish)
    for shell in ("bash", "zsh", "fish"):
        assert "_PVC_COMPLETE" in pvc("completion", shell).stdout
    assert "'tcsh' is not one of" in pvc.error("completion", "tcsh")


def test_completion_with_no_cluster_offers_nothing_and_says_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PVC_SANDBOX_DIR": str(tmp_path / "none"), "COMP_WORDS": "pvc vm start ",
           "COMP_CWORD": "3", "_PVC_COMPLETE": "bash_complete"}
    env.pop("PVC_CONFIG", None)
    res = subprocess.run([str(ROOT / ".venv/bin/pvc")], env=env, capture_output=True,
                         text=True, timeout=30)
    assert (res.returncode, res.stdout.strip(), res.stderr) == (0, "", "")


def test_version_and_help_say_what_there_is(pvc: Pvc) -> None:
    lines = pvc("--version").stdout.splitlines()
    assert lines[0].startswith("pvc 0.") and "schema version 1" in lines[0]
    assert lines[1].startswith("cluster: sandbox at") and lines[1].endswith("schema version 1")
    node_help = pvc("node", "--help").stdout
    for sub in ("flush", "unflush", "primary", "cordon", "uncordon"):
        assert sub in node_help
    top = pvc("--help").stdout
    assert "watch, cancel" in top and "modify, meta, rename" in top
    line = pvc.error("vm", "list", "--state", "bogus")
    assert "'bogus' is not one of" in line and "'running'" in line


# ---------------------------------------------------------------------- output that pipes

def test_vm_log_opens_its_pager_at_the_newest_line(pvc: Pvc, tmp_path: Path) -> None:
    with open(console_file("demo6", pvc), "ab") as f:
        f.write(b"oldest\nnewest\n")
    wait_until("demo6's console", lambda: "newest" in pvc("vm", "log", "demo6").stdout)
    less = tmp_path / "less"
    less.write_text("#!/bin/sh\necho \"LESS ARGS: $*\"\ncat > /dev/null\n")
    less.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "PAGER"}
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    code, out = on_a_terminal(["vm", "log", "demo6"], env={**env, "PAGER": ""})
    assert code == 0 and "LESS ARGS: -R +G" in out
