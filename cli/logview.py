"""Showing a line buffer (a VM's console, a node's log): the last lines through a pager, or
followed as they arrive."""
from __future__ import annotations

import os
import queue
import sys
from typing import Any, Callable

import click


def log_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--lines and --follow, as `vm log` and `node log` take them."""
    command = click.option("--follow", "-f", is_flag=True,
                           help="Keep printing new lines as they arrive, until Ctrl-C.")(command)
    return click.option("--lines", "-n", "count", type=click.IntRange(min=0), default=None,
                        help="Show the last N lines (default: all; 10 with --follow).")(command)


def show_buffer(buf: dict[str, Any] | None, count: int | None) -> None:
    """The last `count` lines (all: None), through a pager on a terminal."""
    from pvc.console import buffer
    shown = buffer.last_lines(buf, count)
    if buf and buf.get("size_limited") and count is None:
        click.echo(f"(older lines were dropped to fit ZooKeeper's node size: "
                   f"{len(buf['lines'])} of the configured {buf.get('limit_lines')} kept)",
                   err=True)
    text = "\n".join(line for _seq, line in shown)
    if sys.stdout.isatty():
        _pager_at_the_newest_line()
        click.echo_via_pager(text + "\n")
    else:
        click.echo(text)


def _pager_at_the_newest_line() -> None:
    """The default pager, less, opens at the end (the newest output is what one looks for);
    an operator's own $PAGER is left as it is."""
    import shutil
    if not os.environ.get("PAGER") and shutil.which("less"):
        os.environ["PAGER"] = "less -R +G"


def follow_buffer(c: Any, path: str, buf: dict[str, Any] | None, count: int) -> None:
    """Print the last `count` lines, then every new line once, pushed by a watch, until
    Ctrl-C."""
    from pvc.console import buffer
    for _seq, line in buffer.last_lines(buf, count):
        click.echo(line)
    last_seen = int((buf or {}).get("last_seq", 0))
    updates: "queue.Queue[Any]" = queue.Queue()
    c.store.watch_data(path, lambda value, _v: updates.put(value))
    try:
        while True:
            missed, lines = buffer.new_since(updates.get(), last_seen)
            if missed:
                click.echo(f"[… {missed} lines missed: more than the buffer holds arrived "
                           "at once]", err=True)
            for seq, line in lines:
                click.echo(line)
                last_seen = seq
    except KeyboardInterrupt:
        pass
