"""Helpers shared by the subcommands: configuration, connection, output."""
from __future__ import annotations

import json
import math
import sys
import time
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import click

from pvc.core.config import Config

if TYPE_CHECKING:   # imported when a command connects, so `pvc --help` stays fast
    from pvc.core.cluster import Cluster

format_option = click.option("--format", "fmt", type=click.Choice(["text", "json"]),
                             default="text", show_default=True, help="Output format.")


class Seconds(click.FloatRange):
    """A finite number of seconds in a range (click's FloatRange lets nan and inf through)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return number


yes_option = click.option("--yes", "-y", is_flag=True,
                          help="Do not ask for confirmation (a script without a terminal is "
                               "never asked).")

CLOSE_WAIT = 2.0   # seconds a command waits for ZooKeeper to end its session


def confirm(yes: bool, question: str) -> None:
    """Ask before something disruptive, on a terminal only: --yes, or no terminal to ask on
    (a script), goes ahead. A no aborts (exit 130) and changes nothing."""
    if yes or not (sys.stdin.isatty() and sys.stderr.isatty()):
        return
    if not click.confirm(question, default=False, err=True):
        raise click.exceptions.Abort()


def wait_timeout_option(also_timeout: bool = True) -> Any:
    """--wait-timeout (and --timeout, where the command has no other use for it)."""
    names = ["--wait-timeout", "--timeout"] if also_timeout else ["--wait-timeout"]
    return click.option(
        *names, "wait_timeout", type=Seconds(min=0.1, max=86400 * 7), default=None,
        metavar="SECONDS",
        help="With --wait: stop waiting after this long (the operation goes on; exit 3).")


def load_config(ctx: click.Context) -> Config:
    from pvc.core import config as configmod
    root = ctx.find_root()
    if "config" not in root.obj:
        root.obj["config"] = configmod.load(
            configmod.locate(root.obj.get("config_path"), sandbox=True))
    return root.obj["config"]


def cluster(ctx: click.Context) -> Cluster:
    """A connected Cluster, closed when the command ends."""
    root = ctx.find_root()
    if "cluster" not in root.obj:
        from pvc.core.cluster import Cluster
        c = Cluster.connect(load_config(ctx))
        root.obj["cluster"] = c
        # the command is over: its session need not be seen out (no ephemerals of its own)
        root.call_on_close(lambda: c.close(wait=CLOSE_WAIT))
        say_maintenance(c)
    return root.obj["cluster"]


def say_maintenance(c: Cluster) -> None:
    """Every command's first line while the cluster is in maintenance (on stderr: output
    for scripts stays as it is)."""
    held = c.maintenance()
    if held is not None:
        from pvc.operations.holds import describe
        click.echo(f"MAINTENANCE: the cluster is in maintenance {describe(held)} "
                   "(nothing acts on its own)", err=True)


def emit_json(data: Any) -> None:
    """JSON for scripts: times in ISO 8601 with their zone (pvc.core.timefmt)."""
    from pvc.core.timefmt import times_as_text
    click.echo(json.dumps(times_as_text(data), indent=2, sort_keys=True, default=str))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Print rows as an aligned table; columns are (key, heading)."""
    click.echo(table_text(rows, columns))


def table_text(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    cells = [[_cell(r.get(k)) for k, _ in columns] for r in rows]
    heads = [h for _, h in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() for c in cells]
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v) or "-"
    return str(v)


def pairs(data: dict[str, Any], keys: Iterable[str] | None = None) -> None:
    keys = list(keys or data.keys())
    width = max(len(k) for k in keys)
    for k in keys:
        click.echo(f"{k.ljust(width)}  {_cell(data.get(k))}")


def stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)

