"""Every command that takes a reference (a VM, a node, an operation, a network), found by
walking click's command tree, fed hostile references by Hypothesis: each answers with one line
on stderr and a non-zero exit, and changes nothing. A new command cannot miss this: it is
found by the reference completion its argument declares."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Iterator

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli import complete
from cli.main import cli, main
from tests.conftest import write_config

pytestmark = pytest.mark.integration

KINDS = {complete.vms: "VM", complete.nodes: "node", complete.operations: "operation",
         complete.networks: "network"}

# References no name can be: paths, dots, blanks, control characters, the over-long.
HOSTILE = st.one_of(
    st.sampled_from(["", ".", "..", "../x", "./x", "/", "a/b", "..\\x", " ", " x", "x ",
                     "\t", "\n", "x\ny", "a" * 300, "../../../etc/passwd", "*", "%s", "{}"]),
    st.text(min_size=1, max_size=40).map(lambda s: s + "/"),
    st.text(min_size=1, max_size=40).map(lambda s: "\x01" + s),
)


def leaves(group: click.Group, path: list[str], ctx: click.Context) -> Iterator[Any]:
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from leaves(command, path + [name], ctx)
        elif command is not None:
            yield path + [name], command


def reference_commands() -> list[tuple[list[str], click.Command, click.Parameter]]:
    ctx = click.Context(cli)
    found = []
    for path, command in leaves(cli, [], ctx):
        for param in command.params:
            if getattr(param, "_custom_shell_complete", None) in KINDS:
                found.append((path, command, param))
    return found


COMMANDS = reference_commands()


def test_the_tree_has_the_commands_we_know() -> None:
    names = {" ".join(p) + " " + (q.opts[0] if isinstance(q, click.Option) else q.name)
             for p, _c, q in COMMANDS}
    for known in ("vm info ref", "vm start refs", "node flush node_name", "task show op_id",
                  "task cancel op_id", "vm migrate --target", "network info vni"):
        assert known in names, sorted(names)


def filler(param: click.Parameter, xml: Path) -> str:
    """A harmless value for a required parameter that is not the reference under test."""
    if isinstance(param.type, (click.Path, click.File)):
        return str(xml)
    if isinstance(param.type, click.Choice):
        return str(param.type.choices[0])
    if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
        return "1"
    return "filler"


def argv(path: list[str], command: click.Command, target: click.Parameter, value: str,
         xml: Path) -> list[str]:
    args = list(path)
    for param in command.params:
        if isinstance(param, click.Argument):
            args.append(value if param is target else filler(param, xml))
        elif param is target:
            args += [param.opts[0], value]
        elif param.name == "yes":
            args.append("--yes")
    return args


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def pvc_config(client_config: Any, tmp_path: Path) -> Path:
    return write_config(client_config, tmp_path / "pvc.yaml")


@pytest.mark.parametrize("path, command, param", COMMANDS,
                         ids=[" ".join(p) + ":" + q.name for p, _c, q in COMMANDS])
def test_hostile_references_get_one_line(cluster: Any, pvc_config: Path, tmp_path: Path,
                                         path: list[str], command: click.Command,
                                         param: click.Parameter) -> None:
    from tests.integration.helpers import demo_xml
    xml = tmp_path / "vm.xml"
    xml.write_text(demo_xml("filler"))
    root = cluster.schema.root

    def state() -> list[int]:
        return cluster.store.child_counts([f"{root}/vms", f"{root}/operations",
                                           f"{root}/nodes", f"{root}/networks"])

    before = state()

    # an option's empty value is its default ("any node", "chosen at start"), not a reference
    values = HOSTILE.filter(bool) if isinstance(param, click.Option) else HOSTILE

    @settings(max_examples=12, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(values)
    def check(value: str) -> None:
        code, _out, err = run(["--config", str(pvc_config),
                               *argv(path, command, param, value, xml)])
        lines = err.strip().splitlines()
        assert code != 0, (value, err)
        assert "Traceback" not in err
        assert len(lines) == 1 and lines[0].startswith("error: "), (value, err)

    check()
    assert state() == before
