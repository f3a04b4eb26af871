"""Submitting an operation and following it to its end."""
from __future__ import annotations

import queue
import sys
import time
from typing import Any

import click

from cli.common import cluster, emit_json, load_config
from pvc.core import states
from pvc.core.errors import PvcError
from pvc.core.models import Operation
from pvc.operations import registry
from pvc.operations.requests import Request


def submit(ctx: click.Context, op: Operation) -> None:
    """Send the operation's task to its node's queue; on failure undo the request."""
    from pvc.operations.requests import abandon
    from tasks.client import submit as send
    try:
        send(load_config(ctx), op)
    except PvcError as e:
        abandon(cluster(ctx), op, f"not submitted: {e}")
        raise


QUEUED_NOTE_AFTER = 3.0   # seconds queued before a follower says what it waits for


def follow(ctx: click.Context, op_id: str, fmt: str, quiet: bool = False,
           timeout: float | None = None) -> None:
    """Print the operation's progress until it ends; exit non-zero if it failed.
    Pushed by a ZooKeeper watch. Says what it waits for when the operation stays queued;
    gives up waiting after `timeout` seconds (the operation goes on). Ctrl-C stops waiting,
    not the operation."""
    c = cluster(ctx)
    updates: "queue.Queue[dict[str, Any] | None]" = queue.Queue()

    def on_change(value: Any, _version: int | None) -> bool:
        updates.put(value)
        return not (value is None or value.get("state") in states.OP_TERMINAL)

    c.store.watch_data(c.schema.operation(op_id), on_change)
    started = time.monotonic()
    deadline = started + timeout if timeout else None
    last_line = ""
    noted = False
    bar = None
    record: dict[str, Any] | None = None
    try:
        while True:
            try:
                update = updates.get(timeout=0.5)
            except queue.Empty:   # nothing new: time to say what it waits for, or give up
                if record is not None and not noted and _waits_for_worker(record, started):
                    noted = True
                    if fmt == "text" and not quiet:
                        click.echo(f"still queued: waiting for a worker of {record['node']} "
                                   f"to take it (queue pvc.node.{record['node']})", err=True)
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(f"stopped waiting after {timeout:g}s: operation {op_id} "
                                      f"is {record['state'] if record else 'unknown'} and "
                                      f"goes on (pvc task show {op_id})")
                continue
            if update is None:
                raise PvcError(f"operation {op_id} disappeared")
            record = update
            line = _line(record)
            total = record.get("progress", {}).get("total")
            if bar is None and total and _draws_bar(record, fmt, quiet):
                bar = click.progressbar(length=total, label=record["kind"], file=sys.stderr)
                bar.__enter__()
            if bar is not None:
                done = record.get("progress", {}).get("done", 0)
                bar.update(done - bar.pos)
            elif fmt == "text" and not quiet and line != last_line:
                click.echo(line, err=True)
            last_line = line
            if record["state"] in states.OP_TERMINAL:
                break
    except KeyboardInterrupt:
        click.echo(f"\nstopped waiting; operation {op_id} goes on (pvc task show {op_id})",
                   err=True)
        sys.exit(130)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    assert record is not None   # the loop ends on a terminal record
    finish_output(record, fmt)


class WaitTimeout(PvcError):
    """--wait gave up; the operation goes on."""

    exit_code = 3


def _waits_for_worker(record: dict[str, Any], started: float) -> bool:
    return (record["state"] == states.OpState.QUEUED
            and time.monotonic() - started > QUEUED_NOTE_AFTER)


def _draws_bar(record: dict[str, Any], fmt: str, quiet: bool) -> bool:
    """A progress bar for per-VM operations on a terminal; lines otherwise."""
    items = registry.kind(record["kind"]).progress == registry.Progress.ITEMS
    return items and fmt == "text" and not quiet and sys.stderr.isatty()


def finish_output(record: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        emit_json(record)
    elif record["state"] == states.OpState.SUCCEEDED:
        click.echo(record.get("message") or "done")
    if record["state"] == states.OpState.FAILED:
        if fmt == "text":
            click.echo(f"error: operation {record['id']} failed: {record.get('error')}", err=True)
        sys.exit(1)
    if record["state"] == states.OpState.CANCELLED:
        if fmt == "text":
            click.echo(f"operation {record['id']} was cancelled", err=True)
        sys.exit(1)
    if record["state"] == states.OpState.TERMINATED:
        if fmt == "text":
            click.echo(f"error: operation {record['id']} was terminated: {record.get('error')}",
                       err=True)
        sys.exit(1)


def _line(record: dict[str, Any]) -> str:
    state = record["state"]
    msg = record.get("message") or ""
    prog = record.get("progress") or {}
    count = f" [{prog.get('done', 0)}/{prog['total']}]" if prog.get("total") else ""
    return f"[{record['id']}] {record['kind']} {record['target']}: {state}{count}" + (
        f" - {msg}" if msg and state not in states.OP_TERMINAL else "")


def submitted(op: Any, fmt: str) -> None:
    if fmt == "json":
        emit_json(op.to_json())
    else:
        click.echo(f"{op.kind} {op.target}: submitted as operation {op.id} to {op.node} "
                   f"(follow: pvc task show {op.id})")


def run_request(ctx: click.Context, req: Request, wait: bool, fmt: str,
                wait_timeout: float | None = None) -> None:
    """Submit a request's task (unless it needed none), then follow it or say it is queued."""
    if not req.submit:
        finish_output(req.op.to_json(), fmt)
        return
    submit(ctx, req.op)
    if wait:
        follow(ctx, req.op.id, fmt, timeout=wait_timeout)
    else:
        submitted(req.op, fmt)


# ---------------------------------------------------------------------- batches

def submit_all(ctx: click.Context, ops: list[Operation]) -> None:
    """Send each operation's task; when one cannot be sent, it and those after it are
    undone (the ones sent before it run)."""
    from pvc.operations.requests import abandon
    for i, op in enumerate(ops):
        try:
            submit(ctx, op)
        except PvcError as e:
            for rest in ops[i + 1:]:
                abandon(cluster(ctx), rest, f"not submitted: {e}")
            sent = f"; the {i} sent before it run" if i else ""
            raise type(e)(f"{e} (its operation and those after it were undone{sent})") \
                from None


def follow_many(ctx: click.Context, op_ids: list[str], fmt: str, label: str,
                timeout: float | None = None) -> list[dict[str, Any]]:
    """Wait for every operation to end, pushed by a watch on each; one progress bar over
    their items on a terminal, a line as each ends otherwise. Their last records."""
    c = cluster(ctx)
    updates: "queue.Queue[tuple[str, dict[str, Any] | None]]" = queue.Queue()
    for op_id in op_ids:
        c.store.watch_data(c.schema.operation(op_id), _feeder(updates, op_id))
    latest: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout if timeout else None
    bar = None
    if fmt == "text" and sys.stderr.isatty():
        bar = click.progressbar(length=1, label=label, file=sys.stderr)
        bar.__enter__()
    try:
        while len([r for r in latest.values() if r["state"] in states.OP_TERMINAL]) \
                < len(op_ids):
            try:
                op_id, record = updates.get(timeout=0.5)
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(f"stopped waiting after {timeout:g}s; the operations "
                                      f"go on (pvc task show ID: {' '.join(op_ids)})")
                continue
            if record is None:
                raise PvcError(f"operation {op_id} disappeared")
            ended_now = record["state"] in states.OP_TERMINAL and \
                latest.get(op_id, {}).get("state") not in states.OP_TERMINAL
            latest[op_id] = record
            if bar is not None:
                bar.length = sum(r.get("progress", {}).get("total", 0) for r in latest.values())
                bar.update(sum(r.get("progress", {}).get("done", 0) for r in latest.values())
                           - bar.pos)
            elif ended_now and fmt == "text":
                click.echo(_line(record), err=True)
    except KeyboardInterrupt:
        click.echo(f"\nstopped waiting; the operations go on (pvc task show ID: "
                   f"{' '.join(op_ids)})", err=True)
        sys.exit(130)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    return [latest[i] for i in op_ids]


def _feeder(updates: "queue.Queue[tuple[str, dict[str, Any] | None]]",
            op_id: str) -> Any:
    def on_change(value: Any, _version: int | None) -> bool:
        updates.put((op_id, value))
        return not (value is None or value.get("state") in states.OP_TERMINAL)
    return on_change
