"""`pvc`: the operator's command. Subcommand modules are imported only when used, so
`pvc --help` stays fast."""
from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from pvc.core.errors import PvcError
from pvc.core.store import RACES

# name -> (module, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "cluster": ("cli.cluster", "cluster",
                "The whole cluster: status, maintenance on/off, shutdown, secure."),
    "network": ("cli.network", "network", "Managed networks: add, list, info, remove, leases."),
    "node": ("cli.node", "node", "Nodes: list (--watch), info, flush, unflush, cordon, "
                                 "uncordon, primary, secondary, lock, power."),
    "vm": ("cli.vm", "vm", "VMs: define, list (--watch), info, start, stop, shutdown, "
                           "restart, migrate, move, modify, meta, rename, log, undefine."),
    "storage": ("cli.storage", "storage", "Ceph: status, osd list, pool, volume (snapshots, "
                                          "upload)."),
    "task": ("cli.task", "task", "Operation records: list, show, watch, cancel."),
    "config": ("cli.config_cmd", "config", "Configuration files: validate."),
    "sandbox": ("cli.sandbox", "sandbox", "A whole local test cluster: up, down, status."),
    "system": ("cli.system", "system", "This node under systemd: install, boot, shutdown."),
    "completion": ("cli.main", "completion", "Print the shell completion script "
                                             "(bash, zsh, fish)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """pvc's version and schema version, and the cluster's schema version when it answers."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version

    from pvc.core.schema import VERSION
    try:
        mine = version("pvc")
    except PackageNotFoundError:
        mine = "unknown (not installed)"
    click.echo(f"pvc {mine} (schema version {VERSION})")
    click.echo(f"cluster: {_cluster_version(ctx.params.get('config_path'))}")
    ctx.exit(0)


def _cluster_version(config_path: str | None) -> str:
    from pvc.core import config as configmod
    from pvc.core.cluster import Cluster
    try:
        cfg = configmod.load(configmod.locate(config_path, sandbox=True))
        c = Cluster.connect(cfg)
    except PvcError as e:
        return f"not reachable ({e})"
    try:
        stored = c.store.get_text(c.schema.version) or "none"
        return f"{cfg.cluster.name} at {cfg.cluster.zookeeper.hosts}, schema version {stored}"
    finally:
        c.close()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="FILE", envvar="PVC_CONFIG",
              is_eager=True,
              help="Configuration file (default: $PVC_CONFIG, a running sandbox, "
                   "/etc/pvc/pvc.yaml).")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=show_version,
              help="pvc's version and schema version, and the cluster's when it answers.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """pvc: run KVM virtual machines on a cluster of nodes."""
    ctx.obj = {"config_path": config_path}


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL; it completes commands, options, and the
    cluster's VM names, node names, operation ids and networks. For example:

    \b
      bash: pvc completion bash > /etc/bash_completion.d/pvc
      zsh:  pvc completion zsh > "${fpath[1]}/_pvc"
      fish: pvc completion fish > ~/.config/fish/completions/pvc.fish
    """
    from cli.complete import script
    click.echo(script(shell, cli))


def main(argv: list[str] | None = None) -> None:
    """The console script (argv None) leaves with os._exit once everything it wrote is
    flushed: the interpreter's teardown of modules, objects and idle threads was 15 to 20 ms
    of a 100 ms command. Called with argv (in-process), it raises SystemExit as usual."""
    code = run(argv)
    if argv is not None:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):   # a reader that left (`| head`), a closed stream
            pass
    os._exit(code)


def run(argv: list[str] | None) -> int:
    """Run the command; its exit code (errors said in one line on stderr)."""
    # Libraries' own warnings (e.g. kazoo's "connection dropped" on close) are not for the
    # operator; pvc reports what matters as one line.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        rc: Any = cli.main(args=argv, prog_name="pvc", standalone_mode=False)
    except SystemExit as e:   # ctx.exit(), sys.exit() inside a command
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except RACES as e:   # a race the command did not expect: never show a znode path
        logging.getLogger("pvc").debug("store error: %s", e)
        click.echo("error: the cluster changed while the command ran (another command or "
                   "node acted at the same moment); nothing was changed, try again", err=True)
        return 1
    except PvcError as e:
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except click.UsageError as e:
        hint = f" (see: {e.ctx.command_path} --help)" if e.ctx else ""
        click.echo(f"error: {e.format_message()}{hint}", err=True)
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    main()
