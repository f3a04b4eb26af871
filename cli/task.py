"""`pvc task …`: the durable operation records."""
from __future__ import annotations

import json

import click

from cli.common import cluster, emit_json, format_option, stamp, table, wait_timeout_option
from cli.complete import operation_argument
from pvc.core.states import OpState

COLUMNS = [("id", "ID"), ("kind", "KIND"), ("target", "TARGET"), ("node", "NODE"),
           ("state", "STATE"), ("created_at", "CREATED"), ("requested_by", "BY"),
           ("summary", "RESULT")]


@click.group()
def task() -> None:
    """Operation records: what was asked, by whom, and how it ended."""


@task.command(name="list")
@click.option("--limit", type=click.IntRange(min=1, max=100_000), default=50,
              show_default=True, help="Newest records to show.")
@click.option("--state", type=click.Choice([s.value for s in OpState]), default=None,
              help="Only records in this state.")
@format_option
@click.pass_context
def list_(ctx: click.Context, limit: int, state: str, fmt: str) -> None:
    """List operations, newest first."""
    ops = cluster(ctx).operations()
    if state:
        ops = [o for o in ops if o.state == state]
    ops = ops[:limit]
    if fmt == "json":
        emit_json([o.to_json() for o in ops])
        return
    rows = []
    for o in ops:
        row = o.to_json()
        row["created_at"] = stamp(o.created)
        row["summary"] = o.error or o.message
        rows.append(row)
    table(rows, COLUMNS)


@task.command()
@operation_argument
@format_option
@click.pass_context
def show(ctx: click.Context, op_id: str, fmt: str) -> None:
    """Show one operation with its progress and history."""
    c = cluster(ctx)
    op = c.operation(op_id)
    flower = f"{c.config.cluster.flower_url.rstrip('/')}/task/{op.id}" \
        if c.config.cluster.flower_url and op.task else ""
    if fmt == "json":
        emit_json({**op.to_json(), "flower_url": flower})
        return
    click.echo(f"operation {op.id}: {op.kind} {op.target} on {op.node or '-'}")
    if flower:
        click.echo(f"  flower      {flower}")
    click.echo(f"  state       {op.state}" + (f" ({op.error})" if op.error else ""))
    click.echo(f"  requested   {stamp(op.created)} by {op.requested_by}"
               + (f": {op.reason}" if op.reason else ""))
    click.echo(f"  started     {stamp(op.started)}   finished {stamp(op.finished)}"
               f"   attempts {op.attempts}")
    if op.message:
        click.echo(f"  message     {op.message}")
    for side in ("before", "after"):   # a recorded change: what it changed
        if side in op.args:
            click.echo(f"  {side:<11} {json.dumps(op.args[side], sort_keys=True)}")
    prog = op.progress
    if prog:
        click.echo(f"  progress    {prog.get('done', 0)}/{prog.get('total', '?')}")
        for item, st in sorted(prog.get("items", {}).items()):
            click.echo(f"    {item:<24} {st}")
    click.echo("  history")
    for ts, st, note in op.history:
        click.echo(f"    {stamp(ts)}  {st:<17} {note}")


@task.command()
@operation_argument
@wait_timeout_option()
@format_option
@click.pass_context
def watch(ctx: click.Context, op_id: str, wait_timeout: float | None, fmt: str) -> None:
    """Follow an operation until it ends; exit non-zero if it failed."""
    from cli.ops import follow
    cluster(ctx).operation(op_id)   # a clear error for an unknown id
    follow(ctx, op_id, fmt, timeout=wait_timeout)


@task.command()
@operation_argument
@format_option
@click.pass_context
def cancel(ctx: click.Context, op_id: str, fmt: str) -> None:
    """Cancel an operation that has not started; ask a running flush or unflush to stop
    after the migrations in flight (the node then stays flushing/unflushing)."""
    from pvc.operations import records
    record = records.cancel(cluster(ctx), op_id)
    if fmt == "json":
        emit_json(record.to_json())
    elif record.state == "cancelled":
        click.echo(f"operation {op_id} cancelled ({record.kind} {record.target})")
    else:
        click.echo(f"operation {op_id} will stop after the migrations in flight "
                   f"(follow: pvc task watch {op_id})")
