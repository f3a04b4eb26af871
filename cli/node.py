"""`pvc node …`: the cluster's nodes."""
from __future__ import annotations

from typing import Any

import click

from cli.common import cluster, emit_json, format_option, pairs, table

FIELDS = ["name", "daemon_state", "domain_state", "coordinator_state", "vms", "mem_total",
          "mem_free", "mem_allocated", "mem_provisioned", "vcpus_allocated", "cpus", "load",
          "hypervisor", "live_migration", "enable_hypervisor", "keepalive"]
LIST_COLUMNS = [("name", "NAME"), ("daemon_state", "DAEMON"), ("domain_state", "DOMAIN"),
                ("coordinator_state", "COORD"), ("vms", "VMS"), ("mem_total", "MEM MiB"),
                ("mem_free", "FREE"), ("mem_allocated", "ALLOC"), ("mem_provisioned", "PROV"),
                ("vcpus_allocated", "VCPUS"), ("load", "LOAD"), ("hypervisor", "HV")]


def node_json(n: Any) -> dict[str, Any]:
    d = n.to_json()
    return {k: d.get(k) for k in FIELDS}


@click.group()
def node() -> None:
    """Inspect the cluster's nodes."""


@node.command(name="list")
@format_option
@click.pass_context
def list_(ctx: click.Context, fmt: str) -> None:
    """List nodes with their states and resources (memory in MiB)."""
    rows = [node_json(n) for n in cluster(ctx).nodes()]
    if fmt == "json":
        emit_json(rows)
    else:
        table(rows, LIST_COLUMNS)


@node.command()
@click.argument("name", metavar="NODE")
@format_option
@click.pass_context
def info(ctx: click.Context, name: str, fmt: str) -> None:
    """Show one node."""
    data = node_json(cluster(ctx).node(name))
    if fmt == "json":
        emit_json(data)
    else:
        pairs(data, FIELDS)
