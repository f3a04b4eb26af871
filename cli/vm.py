"""`pvc vm …`: define, inspect and run VMs."""
from __future__ import annotations

from typing import Any

import click

from cli.common import (
    Seconds,
    cluster,
    confirm,
    emit_json,
    format_option,
    pairs,
    stamp,
    table_text,
    wait_timeout_option,
    yes_option,
)
from cli.complete import nodes as complete_nodes
from cli.complete import vm_argument
from cli.complete import vms as complete_vms
from cli.logview import log_options
from pvc.core.config import MIGRATION_METHODS, SELECTORS

# What `vm list --state` filters on: the desired states and what hypervisors report.
VM_LIST_STATES = ["start", "stop", "disable", "running", "stopped", "paused", "stopping",
                  "crashed", "suspended", "unknown"]
LIST_COLUMNS = [("name", "NAME"), ("uuid", "UUID"), ("state", "STATE"),
                ("observed", "OBSERVED"), ("node", "NODE"), ("last_node", "LAST NODE"),
                ("memory", "MEM MiB"), ("vcpus", "VCPUS"), ("operation", "OPERATION")]
# With --stats: the last published statistics (pvc.node.vmstats keys)
STATS_COLUMNS = [("name", "NAME"), ("observed", "OBSERVED"), ("node", "NODE"),
                 ("cpu%", "CPU%"), ("mem_mib", "MEM USED MiB"), ("rd/s", "READ B/s"),
                 ("wr/s", "WRITE B/s"), ("rx/s", "RX B/s"), ("tx/s", "TX B/s")]


@click.group()
def vm() -> None:
    """Define, inspect and run VMs. VM arguments take a name or a UUID."""


@vm.command()
@click.argument("xmlfiles", metavar="XMLFILE...", nargs=-1, required=True,
                type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--node", default="", shell_complete=complete_nodes, help="Node to run it on (default: chosen at start).")
@click.option("--autostart", is_flag=True, help="Start it when its node is unflushed.")
@click.option("--selector", type=click.Choice(SELECTORS), default=None,
              help="How to choose its node (default: the cluster's).")
@click.option("--node-limit", default="", metavar="N1,N2",
              help="Nodes it may run on (default: any).")
@click.option("--migration-method", type=click.Choice(MIGRATION_METHODS), default=None,
              help="How it moves between nodes (default: the cluster's).")
@format_option
@click.pass_context
def define(ctx: click.Context, xmlfiles: tuple[str, ...], node: str, autostart: bool,
           selector: str | None, node_limit: str, migration_method: str | None,
           fmt: str) -> None:
    """Define a VM from a libvirt domain XML file ("-": standard input). It is stored,
    stopped. Several files define several VMs, all checked before any is stored (a refusal
    names its file), with the same options."""
    from pvc.core.errors import InvalidInput
    from pvc.vm import definition, domxml
    sources = []
    for path in xmlfiles:
        try:
            with click.open_file(path, "rb") as f:
                xml = domxml.decode(f.read(domxml.MAX_XML_BYTES + 1))
        except OSError as e:
            raise click.FileError(path, e.strerror) from None
        except InvalidInput as e:
            raise InvalidInput(f"{path}: {e}" if len(xmlfiles) > 1 else str(e)) from None
        sources.append((path if len(xmlfiles) > 1 else "", xml))
    defined = definition.define_many(cluster(ctx), sources, node=node, autostart=autostart,
                                     selector=selector or "",
                                     node_limit=[n.strip() for n in node_limit.split(",")],
                                     migration_method=migration_method or "")
    found = [{"name": vm.name, "uuid": vm.uuid} for vm in defined]
    if fmt == "json":
        emit_json(found[0] if len(xmlfiles) == 1 else found)
    else:
        for vm in found:
            click.echo(f"{vm['name']} {vm['uuid']}")


@vm.command()
@vm_argument
@click.option("--delete-volumes", is_flag=True, help="Also remove its disks' volumes on Ceph.")
@yes_option
@format_option
@click.pass_context
def undefine(ctx: click.Context, ref: str, delete_volumes: bool, yes: bool, fmt: str) -> None:
    """Remove a stopped VM from the cluster (its definition is gone for good; its volumes
    stay unless --delete-volumes)."""
    from pvc.vm import definition
    c = cluster(ctx)
    found = c.vm(ref).value
    deleting = found.volumes if delete_volumes else []
    confirm(yes, f"Undefine VM {found.name}? Its definition is deleted" +
            (f", and its volumes {', '.join(deleting)}" if deleting else ""))
    gone, removed = definition.undefine_with_volumes(c, ref, delete_volumes)
    if fmt == "json":
        emit_json({"name": gone.name, "uuid": gone.uuid, "undefined": True,
                   "volumes_removed": removed})
    else:
        click.echo(f"undefined {gone.name} {gone.uuid}" +
                   (f"; volumes removed: {', '.join(removed)}" if removed else ""))


@vm.command(name="list")
@click.option("--node", default="", shell_complete=complete_nodes, help="Only VMs assigned to or running on this node.")
@click.option("--state", type=click.Choice(VM_LIST_STATES), default=None,
              help="Only VMs in this state: desired (start, stop, disable) or observed "
                   "(running, stopped, paused, …).")
@click.option("--all", "show_all", is_flag=True,
              help="Also list domains running on nodes that are not pvc VMs.")
@click.option("--watch", "-w", is_flag=True,
              help="Redraw whenever a VM changes (pushed by ZooKeeper); Ctrl-C leaves.")
@click.option("--stats", is_flag=True,
              help="Show each running VM's statistics (CPU, memory, disk and network rates) "
                   "as its node last published them.")
@format_option
@click.pass_context
def list_(ctx: click.Context, node: str, state: str, show_all: bool, watch: bool,
          stats: bool, fmt: str) -> None:
    """List VMs (with --all, also the domains pvc does not know that nodes run)."""
    c = cluster(ctx)
    if node and node not in c.node_names():
        raise click.BadParameter(f"no node named {node!r}", param_hint="--node")

    def view() -> Any:
        rows = _list_rows(c, node, state, show_all)
        if stats:
            _add_stats(c, rows)
        return rows if fmt == "json" else table_text(rows, STATS_COLUMNS if stats
                                                     else LIST_COLUMNS)

    if watch:
        from cli.watch import Watches, redraw_on_change
        s = c.schema
        watches = Watches(c)
        watches.children(s.vms, each=lambda u: [s.vm(u)])
        watches.children(s.nodes, each=lambda n: [s.node_field(n, "domains"), s.node_alive(n)])
        watches.children(s.vm_operations)
        redraw_on_change(watches, view, fmt)
    elif fmt == "json":
        emit_json(view())
    else:
        click.echo(view())


def _list_rows(c: Any, node: str, state: str | None, show_all: bool) -> list[dict[str, Any]]:
    nodes = c.nodes()
    rows = [v.to_json() for v in c.views(c.vms(), nodes)]
    if show_all:
        rows += [{"name": d["name"], "uuid": d["uuid"], "state": "(not a pvc VM)",
                  "observed": d["state"], "node": d["node"], "running_on": [d["node"]],
                  "last_node": "", "memory": None, "vcpus": None, "operation": "",
                  "known": False} for d in c.unknown_domains(nodes)]
    if node:
        rows = [r for r in rows if r["node"] == node or node in r["running_on"]]
    if state:
        rows = [r for r in rows if state in (r["state"], r["observed"])]
    rows.sort(key=lambda r: r["name"])
    return rows


def _add_stats(c: Any, rows: list[dict[str, Any]]) -> None:
    """Each row's `stats` (JSON) and its columns (text): "-" where none was published."""
    from pvc.node import vmstats
    found = vmstats.published(c, sorted({n for r in rows for n in r["running_on"]}))
    for r in rows:
        r["stats"] = found.get(r["uuid"], {})
        for key, _title in STATS_COLUMNS[3:]:
            r[key] = r["stats"].get(key, "-")
        if "mem" in r["stats"]:
            r["mem_mib"] = round(r["stats"]["mem"] / 2**20, 1)


@vm.command()
@vm_argument
@click.option("--xml", "show_xml", is_flag=True,
              help="Print only the stored definition (with --format json: add it as `xml`).")
@format_option
@click.pass_context
def info(ctx: click.Context, ref: str, show_xml: bool, fmt: str) -> None:
    """Show one VM."""
    c = cluster(ctx)
    view = c.views([c.vm(ref).value])[0]
    data = view.to_json()
    if show_xml and fmt == "text":   # for a pipe: `pvc vm info web1 --xml > web1.xml`
        click.echo(c.vm_xml(view.vm.uuid).rstrip("\n"))
        return
    if show_xml:
        data["xml"] = c.vm_xml(view.vm.uuid)
    from pvc.node import vmstats
    data["stats"] = vmstats.published(c, view.running_on).get(view.vm.uuid, {})
    if fmt == "json":
        emit_json(data)
        return
    data["defined"] = stamp(data["defined"])
    data["stats"] = (f"{vmstats.text(data['stats'])} (at {stamp(data['stats']['at'])})"
                     if data["stats"] else "-")
    pairs(data)


@vm.command()
@vm_argument
@click.argument("xmlfile", type=click.File("rb"), required=False)
@click.option("--editor", is_flag=True,
              help="Edit the stored definition in $EDITOR; it is checked when you save, the "
                   "change is shown and you are asked before it is applied.")
@click.option("--restart", is_flag=True,
              help="Apply it at once by a clean restart (default: at the VM's next start).")
@click.option("--wait", is_flag=True, help="With --restart: wait until it is done.")
@click.option("--reason", default="", help="Why (kept in the operation record).")
@yes_option
@wait_timeout_option()
@format_option
@click.pass_context
def modify(ctx: click.Context, ref: str, xmlfile: Any, editor: bool, restart: bool,
           wait: bool, reason: str, yes: bool, wait_timeout: float | None, fmt: str) -> None:
    """Change a VM's definition from XMLFILE (or --editor). Its name and UUID stay (see
    rename); the change takes effect at its next start, or now with --restart."""
    from cli.ops import run_request
    from pvc.vm import changes, domxml
    if bool(xmlfile) == editor:
        raise click.UsageError("give either XMLFILE or --editor")
    c = cluster(ctx)
    if editor:
        xml = _edit(c, ref, yes)
        if xml is None:
            click.echo("no change: nothing was applied", err=True)
            return
    else:
        xml = domxml.decode(xmlfile.read(domxml.MAX_XML_BYTES + 1))
    change = changes.modify(c, ref, xml, reason)
    if fmt == "json" and not restart:
        emit_json(change.op.to_json())
    elif fmt == "text":
        click.echo(change.op.message)
    if restart and change.running_on:
        from pvc.vm import lifecycle
        run_request(ctx, lifecycle.request(c, ref, "restart", reason or "apply vm modify"),
                    wait, fmt, wait_timeout)
    elif restart and fmt == "json":
        emit_json(change.op.to_json())


def _edit(c: Any, ref: str, yes: bool) -> str | None:
    """The operator's edit of the stored XML, checked, its diff shown and confirmed; None
    when nothing changed. A definition that does not check out can be edited again."""
    import sys

    from pvc.core.errors import InvalidInput
    from pvc.vm import changes
    found = c.vm(ref).value
    text = c.vm_xml(found.uuid)
    while True:
        edited = click.edit(text, extension=".xml", require_save=True)
        if edited is None or edited.strip() == c.vm_xml(found.uuid).strip():
            return None
        try:
            preview = changes.modify(c, ref, edited, dry_run=True)
            break
        except InvalidInput as e:
            if not sys.stdin.isatty():   # nobody to ask: the error, as for a file
                raise
            click.echo(f"error: {e}", err=True)
            if not click.confirm("Edit it again?", default=True, err=True):
                raise click.exceptions.Abort() from None
            text = edited
    click.echo(preview.op.args["diff"], nl=False)
    confirm(yes, f"Apply this change to {found.name}?")
    return edited


@vm.command(name="meta")
@vm_argument
@click.option("--autostart/--no-autostart", default=None,
              help="Start it when its node is unflushed.")
@click.option("--selector", type=click.Choice(SELECTORS), default=None,
              help="How to choose its node.")
@click.option("--node-limit", default=None, metavar="N1,N2",
              help="Nodes it may run on ('' for any).")
@click.option("--migration-method", type=click.Choice(MIGRATION_METHODS), default=None,
              help="How it moves between nodes.")
@click.option("--reason", default="", help="Why (kept in the operation record).")
@format_option
@click.pass_context
def meta_(ctx: click.Context, ref: str, autostart: bool | None, selector: str | None,
          node_limit: str | None, migration_method: str | None, reason: str,
          fmt: str) -> None:
    """Change a VM's placement metadata (not its XML). Nothing moves now: its next start or
    migration uses them."""
    from pvc.vm import changes
    limit = None if node_limit is None else [n.strip() for n in node_limit.split(",")]
    change = changes.meta(cluster(ctx), ref, reason, autostart=autostart,
                          node_selector=selector, node_limit=limit,
                          migration_method=migration_method)
    if fmt == "json":
        emit_json(change.op.to_json())
    else:
        click.echo(change.op.message)


@vm.command()
@vm_argument
@click.argument("new_name", metavar="NEW_NAME")
@click.option("--reason", default="", help="Why (kept in the operation record).")
@format_option
@click.pass_context
def rename(ctx: click.Context, ref: str, new_name: str, reason: str, fmt: str) -> None:
    """Rename a stopped VM (its definition's <name> too)."""
    from pvc.vm import changes
    change = changes.rename(cluster(ctx), ref, new_name, reason)
    if fmt == "json":
        emit_json(change.op.to_json())
    else:
        click.echo(change.op.message)


SHOWN_PROBLEMS = 20   # refusals and failures a batch prints (JSON has every VM's result)


def _action(action: str, doc: str, asks: bool = False) -> click.Command:
    @click.argument("refs", metavar="VM...", nargs=-1, shell_complete=complete_vms)
    @click.option("--node", "on_node", default="", shell_complete=complete_nodes,
                  help="Every VM assigned to or running on this node (instead of names).")
    @click.option("--all", "everything", is_flag=True, help="Every VM (instead of names).")
    @click.option("--wait", is_flag=True, help="Wait until it is done; exit non-zero if it "
                                               "failed.")
    @click.option("--reason", default="", help="Why (kept in the operation record).")
    @wait_timeout_option()
    @yes_option
    @format_option
    @click.pass_context
    def command(ctx: click.Context, refs: tuple[str, ...], on_node: str, everything: bool,
                wait: bool, reason: str, wait_timeout: float | None, yes: bool,
                fmt: str) -> None:
        from cli.ops import run_request
        from pvc.vm import lifecycle
        if bool(refs) + bool(on_node) + everything != 1:
            raise click.UsageError("give VM names, or --node NODE, or --all")
        c = cluster(ctx)
        if len(refs) == 1:
            if asks and c.running_on(c.vm(refs[0]).value.uuid):
                confirm(yes, f"{action.capitalize()} VM {refs[0]}? It is powered off at once, "
                             "like pulling its plug")
            run_request(ctx, lifecycle.request(c, refs[0], action, reason), wait, fmt,
                        wait_timeout)
            return
        _run_batch(ctx, c, action, list(refs), on_node, everything, asks, yes, wait, reason,
                   wait_timeout, fmt)

    command.__doc__ = doc + (" Several VMs (names, --node or --all) make one request: an "
                             "operation per node, one progress bar with --wait, a result "
                             "per VM.")
    return vm.command(name=action)(command)


def _run_batch(ctx: click.Context, c: Any, action: str, refs: list[str], on_node: str,
               everything: bool, asks: bool, yes: bool, wait: bool, reason: str,
               wait_timeout: float | None, fmt: str) -> None:
    from cli.ops import follow_many, submit_all
    from pvc.vm import batch
    selected = batch.select(c, refs, on_node, everything)
    if not selected:
        raise click.ClickException(f"no VM {'on node ' + on_node if on_node else 'is defined'}"
                                   "; nothing was changed")
    if on_node or everything or asks:
        which = "every VM" if everything else f"the VMs of {on_node}" if on_node else "VMs"
        confirm(yes, f"{action.capitalize()} {len(selected)} {which}?" +
                (" Those running are powered off at once, like pulling their plug" if asks
                 else ""))
    req = batch.request(c, selected, action, reason)
    submit_all(ctx, req.ops)
    finals = (follow_many(ctx, [op.id for op in req.ops], fmt, f"vm {action}", wait_timeout)
              if wait and req.ops else [op.to_json() for op in req.ops])
    results = _batch_results(finals, req)
    if fmt == "json":
        emit_json({"action": action, "operations": finals, "results": results,
                   "settled": req.settled.to_json() if req.settled else None})
    else:
        _say_batch(action, finals, req, results, wait)
    if any(r["state"] in ("failed", "refused") for r in results.values()):
        ctx.exit(1)


def _batch_results(finals: list[dict[str, Any]], req: Any) -> dict[str, dict[str, str]]:
    """Per VM: its state (queued, running, done, failed, refused), operation and message."""
    out: dict[str, dict[str, str]] = {}
    for record in finals:
        progress = record.get("progress", {})
        for name in record["args"]["vms"].values():
            state = progress.get("items", {}).get(name) or (
                "failed" if record["state"] in ("failed", "terminated") else record["state"])
            out[name] = {"state": state, "operation": record["id"],
                         "message": progress.get("outcomes", {}).get(name, "")}
    if req.settled is not None:
        for name in req.settled.args["vms"].values():
            out[name] = {"state": "done", "operation": req.settled.id,
                         "message": "it was not running"}
    for name, why in req.refused.items():
        out[name] = {"state": "refused", "operation": "", "message": why}
    return dict(sorted(out.items()))


def _say_batch(action: str, finals: list[dict[str, Any]], req: Any,
               results: dict[str, dict[str, str]], wait: bool) -> None:
    if not wait:
        for record in finals:
            click.echo(f"vms.{action} on {record['node']}: {len(record['args']['vms'])} VMs, "
                       f"operation {record['id']} (follow: pvc task show {record['id']})")
        if req.settled is not None:
            click.echo(f"{req.settled.message} (operation {req.settled.id})")
    else:
        counts: dict[str, int] = {}
        for r in results.values():
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        click.echo(f"vm {action}: " + ", ".join(f"{n} {state}" for state, n in
                                                 sorted(counts.items())))
    bad = [(name, r) for name, r in results.items() if r["state"] in ("failed", "refused")]
    for name, r in bad[:SHOWN_PROBLEMS]:
        click.echo(f"{r['state']}: {name}: {r['message']}", err=True)
    if len(bad) > SHOWN_PROBLEMS:
        click.echo(f"… and {len(bad) - SHOWN_PROBLEMS} more (--format json lists every VM)",
                   err=True)


start = _action("start", "Start a VM (placing it on a node if it has none).")
stop = _action("stop", "Stop a VM at once (hard power-off).", asks=True)
shutdown = _action("shutdown", "Shut a VM down gracefully; force it off after the timeout.")
restart = _action("restart", "Shut a VM down gracefully and start it again.")
disable = _action("disable", "Shut a VM down and keep it down (not restarted by unflush).")


def _move_command(mode: str, doc: str, needs_target: bool) -> click.Command:
    @vm_argument
    @click.option("--method", type=click.Choice(["live", "shutdown"]), default=None,
                  help="Migration method (default: the VM's, else the cluster's).")
    @click.option("--force-live", is_flag=True, help="Fail rather than fall back to shutdown.")
    @click.option("--timeout", type=Seconds(min=1, max=86400), default=None, metavar="SECONDS",
                  help="Abort a live migration still running after this long (default: the "
                       "configured limit).")
    @click.option("--bandwidth", type=click.IntRange(min=1, max=1024 ** 2), default=None,
                  metavar="MIB_S",
                  help="Cap a live migration's network use (default: the configured limit).")
    @click.option("--wait", is_flag=True, help="Wait until it is done.")
    @click.option("--reason", default="", help="Why (kept in the operation record).")
    @wait_timeout_option(also_timeout=False)
    @format_option
    @click.pass_context
    def command(ctx: click.Context, ref: str, method: str | None, force_live: bool,
                timeout: float | None, bandwidth: int | None, wait: bool, reason: str,
                wait_timeout: float | None, fmt: str, **kw: Any) -> None:
        from cli.ops import run_request
        from pvc.vm import migration
        req = migration.request(cluster(ctx), ref, mode, target=kw.get("target", ""),
                                method=method or "", force_live=force_live,
                                force=kw.get("force", False), reason=reason,
                                timeout=timeout or 0, bandwidth=bandwidth or 0)
        run_request(ctx, req, wait, fmt, wait_timeout)

    command.__doc__ = doc
    if mode == "migrate":
        command = click.option("--force", is_flag=True,
                               help="Overwrite an existing last node.")(command)
    if mode != "unmigrate":   # unmigrate goes back to the last node: no target to choose
        command = click.option(
            "--target", default="", metavar="NODE", required=needs_target,
            shell_complete=complete_nodes,
            help="Target node" + ("." if needs_target else
                                  " (default: chosen by the VM's selector)."))(command)
    return vm.command(name=mode)(command)


migrate = _move_command("migrate", "Migrate a VM to another node (remembers where it came "
                                   "from; see unmigrate).", False)
unmigrate = _move_command("unmigrate", "Return a migrated VM to its last node.", False)
move = _move_command("move", "Move a VM to another node for good (forgets its last node).",
                     True)


@vm.command(name="log")
@vm_argument
@log_options
@click.pass_context
def log_(ctx: click.Context, ref: str, count: int | None, follow: bool) -> None:
    """Show a VM's serial console (through a pager on a terminal)."""
    from cli.logview import follow_buffer, show_buffer
    from pvc.console import buffer
    from pvc.core.errors import Conflict
    c = cluster(ctx)
    found = c.vm(ref).value
    if not found.console_log:
        raise Conflict(f"VM {found.name} has no serial console log: add <log file='…'/> to a "
                       "<serial> device in its XML")
    running = c.running_on(found.uuid)
    path = c.schema.vm_console(found.uuid)
    buf = c.store.get_json(path, None)
    if follow:
        if not running:
            raise Conflict(f"VM {found.name} is not running (its last output: "
                           f"pvc vm log {found.name})")
        follow_buffer(c, path, buf, 10 if count is None else count)
        return
    if not buffer.last_lines(buf, count):
        if not running:
            raise Conflict(f"VM {found.name} is not running and has no console output")
        click.echo(f"VM {found.name} has printed nothing yet", err=True)
        return
    if not running:
        click.echo(f"VM {found.name} is not running; its last console output:", err=True)
    show_buffer(buf, count)
