"""`pvc config …`: configuration files."""
from __future__ import annotations

import sys

import click

from cli.common import emit_json, format_option


@click.group()
def config() -> None:
    """Check configuration files."""


@config.command()
@click.argument("path", metavar="FILE")
@format_option
def validate(path: str, fmt: str) -> None:
    """Validate FILE; list every problem with its key path."""
    from pvc.core import config as configmod
    from pvc.core.errors import ConfigError
    try:
        cfg = configmod.load(path)
    except ConfigError as e:
        if fmt == "json":
            emit_json({"valid": False, "file": path, "problems": e.problems or [str(e)]})
        else:
            click.echo(f"{path}: invalid", err=True)
            for p in e.problems or [str(e)]:
                click.echo(f"  {p}", err=True)
        sys.exit(1)
    kind = f"node {cfg.node.name}" if cfg.is_node else "client"
    if fmt == "json":
        emit_json({"valid": True, "file": path, "kind": kind, "warnings": list(cfg.warnings)})
    else:
        click.echo(f"{path}: valid ({kind} configuration)")
        for warning in cfg.warnings:
            click.echo(f"warning: {warning}", err=True)
