"""`pvc system …`: pvc on this node as systemd runs it: install, uninstall, and what
pvc-flush.service runs at start (boot) and at stop (shutdown)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import click

from cli.common import Seconds, cluster, emit_json, format_option, load_config

if TYPE_CHECKING:
    from pvc.core.models import Operation
    from pvc.install.installer import Target
    from pvc.node.power import Outcome


@click.group()
def system() -> None:
    """This node under systemd: install, uninstall, boot (unflush at start), shutdown (flush
    at stop)."""


def _this_node(ctx: click.Context) -> str:
    name = load_config(ctx).node.name
    if not name:
        raise click.UsageError("the configuration names no node (node.name): run this on a "
                               "node, with its configuration")
    return name


def _say(fmt: str) -> Callable[[str], None]:
    return (lambda m: click.echo(m, err=True)) if fmt == "text" else (lambda m: None)


def _send(ctx: click.Context) -> Callable[["Operation"], None]:
    from tasks.client import submit
    cfg = load_config(ctx)
    return lambda op: submit(cfg, op)


def _finish(outcome: "Outcome", fmt: str) -> None:
    if fmt == "json":
        emit_json({"ok": outcome.ok, "message": outcome.sentence})
    elif outcome.ok:
        click.echo(outcome.sentence)
    else:
        click.echo(f"error: {outcome.sentence}", err=True)
    if not outcome.ok:
        raise SystemExit(1)


@system.command()
@click.option("--timeout", type=Seconds(), default=300.0, show_default=True,
              help="Seconds to wait for this node's daemon and worker, and for the unflush.")
@format_option
@click.pass_context
def boot(ctx: click.Context, timeout: float, fmt: str) -> None:
    """Once this node's daemon and worker run: unflush it (its VMs come back or start).
    pvc-flush.service runs this at start."""
    from pvc.node import power
    node = _this_node(ctx)
    _finish(power.boot(cluster(ctx), node, timeout, _send(ctx), _say(fmt)), fmt)


@system.command()
@click.option("--budget", type=Seconds(), default=None,
              help="Seconds it may take in all (default: node.stop_budget).")
@format_option
@click.pass_context
def shutdown(ctx: click.Context, budget: float | None, fmt: str) -> None:
    """Empty this node before it stops: flush it; what cannot move in time is shut down
    cleanly and starts again on its unflush. While the whole cluster goes down (pvc cluster
    shutdown) nothing moves. pvc-flush.service runs this at stop."""
    from pvc.node import power
    node = _this_node(ctx)
    cfg = load_config(ctx)
    _finish(power.shutdown(cluster(ctx), node, budget or cfg.node.stop_budget, _send(ctx),
                           _say(fmt)), fmt)


def _target(root: str, prefix: str) -> "Target":
    from pvc.install.installer import Target
    if not prefix.startswith("/"):
        raise click.UsageError(f"--prefix must be an absolute path, not {prefix!r}")
    return Target(Path(root).resolve(), prefix)


_root = click.option("--root", default="/", show_default=True, metavar="DIR",
                     help="Install into DIR as if it were / (a test, an image).")
_prefix = click.option("--prefix", default="/opt/pvc", show_default=True,
                       help="Where the venv goes (PREFIX/venv).")
_dry = click.option("--dry-run", is_flag=True, help="Say what would be done; do nothing.")


@system.command()
@_root
@_prefix
@_dry
def install(root: str, prefix: str, dry_run: bool) -> None:
    """Install pvc on this node: a venv under /opt/pvc, /etc/pvc/pvc.yaml from the sample
    (0600), the systemd units (enabled: daemon, worker, tailer, pvc.target; Flower on
    coordinators; not pvc-flush.service)."""
    from pvc.install import installer
    t = _target(root, prefix)
    installer.carry_out(installer.install_plan(t), dry_run, click.echo)
    click.echo(installer.FLUSH_NOTICE)


@system.command()
@_root
@_prefix
@_dry
def uninstall(root: str, prefix: str, dry_run: bool) -> None:
    """Remove pvc's units (disabled first) and venv; the configuration and every VM stay."""
    from pvc.install import installer
    installer.carry_out(installer.uninstall_plan(_target(root, prefix)), dry_run, click.echo)
