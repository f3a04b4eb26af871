"""`pvc node …`: the cluster's nodes."""
from __future__ import annotations

import time
from typing import Any

import click

from cli.common import (
    cluster,
    confirm,
    emit_json,
    format_option,
    pairs,
    table_text,
    wait_timeout_option,
    yes_option,
)
from cli.complete import node_argument
from cli.logview import log_options

FIELDS = ["name", "daemon_state", "domain_state", "coordinator_state", "workers", "vms",
          "mem_total",
          "mem_free", "mem_allocated", "mem_provisioned", "vcpus_allocated", "cpus", "load",
          "hypervisor", "live_migration", "enable_hypervisor", "keepalive", "cordoned"]
LIST_COLUMNS = [("name", "NAME"), ("daemon_state", "DAEMON"), ("domain_state", "DOMAIN"),
                ("cordoned", "CORDON"),
                ("coordinator_state", "COORD"), ("workers", "WORKERS"), ("vms", "VMS"), ("mem_total", "MEM MiB"),
                ("mem_free", "FREE"), ("mem_allocated", "ALLOC"), ("mem_provisioned", "PROV"),
                ("vcpus_allocated", "VCPUS"), ("load", "LOAD"), ("hypervisor", "HV")]


def node_json(n: Any) -> dict[str, Any]:
    d = n.to_json()
    d["cordoned"] = bool(n.cordon)
    return {k: d.get(k) for k in FIELDS}


def node_details(c: Any, n: Any) -> dict[str, Any]:
    """One node in full: its fields, what it could not fix, and what runs there unknown."""
    data = node_json(n)
    data["unknown_domains"] = [d["name"] for d in c.unknown_domains([n])]
    data["drift"] = {d.get("name", u): d.get("why", "") for u, d in n.drift.items()}
    data["cordon"] = n.cordon      # who cordoned it, why, since when ({}: not cordoned)
    data["bmc"] = n.bmc            # its BMC's audit: when, and what makes fencing unsafe
    data["services"] = n.services  # services around pvc there that do not serve, and why
    data["loop"] = n.loop          # what its daemon's last loop did, and when
    data["fence"] = n.fence        # its last fence: state, when, Ceph clients blocklisted
    return data


@click.group()
def node() -> None:
    """The cluster's nodes: list (--watch) and info, flush/unflush for maintenance,
    cordon/uncordon, primary/secondary (the coordinator role), lock, power."""


@node.command(name="list")
@click.option("--watch", "-w", is_flag=True,
              help="Redraw whenever a node changes (pushed by ZooKeeper); Ctrl-C leaves.")
@format_option
@click.pass_context
def list_(ctx: click.Context, watch: bool, fmt: str) -> None:
    """List nodes with their states and resources (memory in MiB)."""
    c = cluster(ctx)

    def view() -> Any:
        rows = [node_json(n) for n in c.nodes()]
        return rows if fmt == "json" else table_text(rows, LIST_COLUMNS)

    if watch:
        from cli.watch import Watches, redraw_on_change
        from pvc.core.schema import NODE_FIELDS
        s = c.schema
        watches = Watches(c)
        watches.children(s.nodes, each=lambda n: [s.node(n), s.node_alive(n)] + [
            s.node_field(n, f) for f in NODE_FIELDS if f not in ("keepalive", "domains")],
            lists=lambda n: [s.node_workers(n)])
        redraw_on_change(watches, view, fmt)
    elif fmt == "json":
        emit_json(view())
    else:
        click.echo(view())


@node.command()
@node_argument("name")
@format_option
@click.pass_context
def info(ctx: click.Context, name: str, fmt: str) -> None:
    """Show one node."""
    c = cluster(ctx)
    data = node_details(c, c.node(name))
    if fmt == "json":
        emit_json(data)
        return
    from pvc.operations.holds import describe
    data["cordon"] = describe(data["cordon"]) if data["cordon"] else ""
    data["bmc"] = bmc_text(data["bmc"])
    data["services"] = "; ".join(data["services"].values()) or "-"
    data["loop"] = loop_text(data["loop"])
    data["fence"] = fence_text(data["fence"])
    pairs(data, FIELDS + ["cordon", "bmc", "services", "loop", "fence", "unknown_domains",
                          "drift"])


@node.command(name="log")
@node_argument("name")
@log_options
@click.pass_context
def log_(ctx: click.Context, name: str, count: int | None, follow: bool) -> None:
    """Show a node's log: what its daemon, workers and tailer logged (through a pager on a
    terminal), read from the cluster, so from any machine."""
    from cli.logview import follow_buffer, show_buffer
    from pvc.core.errors import Conflict
    c = cluster(ctx)
    node_name = c.node(name).name      # an unknown node is refused here
    path = c.schema.node_field(node_name, "log")
    buf = c.store.get_json(path, None)
    if follow:
        follow_buffer(c, path, buf, 10 if count is None else count)
        return
    if not buf or not buf.get("lines"):
        raise Conflict(f"node {node_name} has logged nothing to the cluster yet (its daemon "
                       "sends its log once it connected to ZooKeeper)")
    show_buffer(buf, count)


def fence_text(fence: dict[str, Any]) -> str:
    if not fence:
        return "-"
    cut = fence.get("blocklisted") or []
    return (f"{fence.get('state', '')}" + (f" ({fence['error']})" if fence.get("error") else "")
            + (f"; Ceph clients blocklisted: {', '.join(cut)}" if cut else ""))


def loop_text(loop: dict[str, Any]) -> str:
    if not loop:
        return "-"
    return f"{loop.get('said', '')} ({time.strftime('%H:%M:%S', time.localtime(loop['at']))})"


def bmc_text(audit: dict[str, Any]) -> str:
    if not audit:
        return "not checked (no BMC, or not yet)"
    return "; ".join(audit.get("problems") or ["sound (no cipher suite 0, wrong passwords "
                                               "refused)"])


def _flush_command(kind: str, doc: str, name: str) -> click.Command:
    @node_argument()
    @click.option("--wait", is_flag=True, help="Wait for the lock and the work; exit "
                                               "non-zero if it failed.")
    @click.option("--reason", default="", help="Why (kept in the operation record).")
    @click.option("--max-parallel", type=click.IntRange(min=1), default=None, metavar="N",
                  help="Migrations at once for this operation (default: the configured "
                       "limits).")
    @wait_timeout_option()
    @format_option
    @click.pass_context
    def command(ctx: click.Context, node_name: str, wait: bool, reason: str,
                max_parallel: int | None, wait_timeout: float | None, fmt: str,
                **kw: Any) -> None:
        from cli.ops import follow, submit, submitted
        from pvc.node import flush
        c = cluster(ctx)
        if kw.get("dry_run"):
            _print_plan(flush.plan_for(c, node_name), node_name, fmt)
            return
        if kind == "flush":
            _confirm_last_node(c, node_name, kw.get("yes", False))
        req = flush.request(c, node_name, kind, reason, max_parallel or 0)
        submit(ctx, req.op)
        status = flush.lock_status(c)
        if fmt == "text" and status.holder and status.holder.get("op") != req.op.id:
            click.echo(f"{kind} of {node_name} queued: {status.sentence()}", err=True)
        if wait:
            follow(ctx, req.op.id, fmt, timeout=wait_timeout)
        else:
            submitted(req.op, fmt)

    command.__doc__ = doc
    if kind == "flush":
        command = click.option("--dry-run", is_flag=True,
                               help="Print the plan (VM → target, method); change "
                                    "nothing.")(command)
        command = yes_option(command)
    return node.command(name=name)(command)


def _confirm_last_node(c: Any, node_name: str, yes: bool) -> None:
    """Flushing the last node that takes VMs leaves its VMs nowhere to go: ask first."""
    others = [n for n in c.nodes() if n.name != node_name and n.is_target()]
    here = c.node(node_name)
    if not others and here.vms:
        confirm(yes, f"{node_name} is the last node that takes VMs: its {here.vms} VM(s) "
                     "have nowhere to go. Flush it anyway?")


def _print_plan(plan: Any, node_name: str, fmt: str) -> None:
    if fmt == "json":
        emit_json([{"vm": p.vm.name, "target": p.target, "method": p.method, "note": p.note}
                   for p in plan])
        return
    if not plan:
        click.echo(f"{node_name} runs no VMs: a flush would only mark it flushed")
    for p in plan:
        click.echo(p.describe())


flush = _flush_command("flush", "Move every VM off NODE, under the cluster flush lock.",
                       "flush")
unflush = _flush_command("unflush", "Bring NODE's VMs back and make it ready again.",
                         "unflush")
ready = _flush_command("unflush", "Same as unflush.", "ready")


def _role_command(name: str, doc: str) -> click.Command:
    @node_argument()
    @click.option("--wait", is_flag=True, help="Wait until the switchover is done.")
    @click.option("--reason", default="", help="Why (kept in the operation record).")
    @wait_timeout_option()
    @format_option
    @click.pass_context
    def command(ctx: click.Context, node_name: str, wait: bool, reason: str,
                wait_timeout: float | None, fmt: str) -> None:
        from cli.ops import run_request
        from pvc.coordinator import switchover
        c = cluster(ctx)
        req = (switchover.request(c, node_name, reason) if name == "primary" else
               switchover.request_secondary(c, node_name, reason))
        run_request(ctx, req, wait, fmt, wait_timeout)

    command.__doc__ = doc
    return node.command(name=name)(command)


primary = _role_command("primary", "Make NODE the primary coordinator: the floating IP, the "
                                   "primary-only services and the database leader move to it.")
secondary = _role_command("secondary", "Hand NODE's primary role to another running "
                                       "coordinator.")


def _cordon_command(name: str, doc: str) -> click.Command:
    @node_argument()
    @click.option("--reason", default="", help="Why (shown by node list and cluster status).")
    @format_option
    @click.pass_context
    def command(ctx: click.Context, node_name: str, reason: str, fmt: str) -> None:
        from pvc.operations import holds
        c = cluster(ctx)
        change = holds.cordon if name == "cordon" else holds.uncordon
        op = change(c, node_name, reason)
        if fmt == "json":
            emit_json(op.to_json())
        else:
            click.echo(op.message)

    command.__doc__ = doc
    return node.command(name=name)(command)


cordon = _cordon_command("cordon", "Place no new VMs on NODE (what runs there stays; nothing "
                                   "moves). Lighter than a flush.")
uncordon = _cordon_command("uncordon", "Let NODE take new VMs again.")


@node.command()
@format_option
@click.pass_context
def lock(ctx: click.Context, fmt: str) -> None:
    """Who holds the cluster flush lock, and who waits for it."""
    from pvc.node.flushlock import lock_status
    status = lock_status(cluster(ctx))
    if fmt == "json":
        emit_json({"holder": status.holder, "queue": status.queue})
        return
    click.echo(status.sentence())
    for i, waiter in enumerate(status.queue, 1):
        click.echo(f"  {i}. {waiter.get('node')}'s {waiter.get('kind')} (op {waiter.get('op')})")


@node.command()
@node_argument()
@click.argument("action", type=click.Choice(["status", "on", "off"]))
@click.option("--yes", is_flag=True, help="Confirm `off`: it cuts the power, no clean stop.")
@click.option("--reason", default="", help="Why (kept in the fence's operation record).")
@format_option
@click.pass_context
def power(ctx: click.Context, node_name: str, action: str, yes: bool, reason: str,
          fmt: str) -> None:
    """A node's power over its BMC (IPMI): status, on, or off. `off` is a fence run by
    another node: once the BMC confirms the power is off, the node is fenced and its VMs
    start elsewhere, as when the cluster fences a dead node."""
    from pvc.core.errors import InvalidInput
    from pvc.node.fencing import bmc_address
    from pvc.node.ipmi import IpmiBmc
    c = cluster(ctx)
    n = c.node(node_name)
    address = bmc_address(c, n)
    if address is None:
        raise InvalidInput(f"node {node_name} has no BMC configured (node.ipmi_host)")
    if action == "off" and not yes:
        raise InvalidInput(f"`power off` cuts {node_name}'s power at once (no clean stop, its "
                           "VMs die with it): add --yes")
    bmc = IpmiBmc(address)
    if action == "off":   # a fence: confirmed off, then its VMs recover elsewhere
        from cli.ops import run_request
        from pvc.node.fencing import power_off_request
        run_request(ctx, power_off_request(c, node_name, reason), True, fmt)
    elif action == "on":
        bmc.power_on()
    state = bmc.power_state()
    if fmt == "json" and action != "off":
        emit_json({"node": node_name, "power": state})
    elif fmt == "text":
        click.echo(f"{node_name}: power {state} (as its BMC reports it)")
