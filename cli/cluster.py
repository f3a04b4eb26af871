"""`pvc cluster …`: the whole cluster at a glance."""
from __future__ import annotations

from typing import Any

import click

from cli.common import cluster as connect
from cli.common import confirm, emit_json, format_option, stamp, yes_option


@click.group()
def cluster() -> None:
    """The cluster as a whole: status, maintenance on/off, shutdown, secure."""


def status_data(c: Any) -> dict[str, Any]:
    from pvc.observe import status
    return status.gather(c).report(c)


@cluster.command()
@format_option
@click.pass_context
def secure(ctx: click.Context, fmt: str) -> None:
    """Close an existing cluster: give every znode of pvc's the cluster's ACL (after setting
    cluster.zookeeper.auth_file on a cluster that had none), then try the doors around pvc
    as a stranger would (ZooKeeper without a login, its four-letter words, Patroni's API
    without credentials) and say what to set for each that is open. Exits 1 while any is."""
    from pvc.coordinator import doors
    c = connect(ctx)
    changed = c.store.secure(c.schema.root)
    found = doors.audit(c)
    if fmt == "json":
        emit_json({"root": c.schema.root, "changed": changed,
                   "doors": [d.to_json() for d in found]})
    else:
        click.echo(f"{changed} znodes under {c.schema.root} now carry the cluster's ACL")
        for d in found:
            click.echo(f"  {'closed' if d.closed else 'OPEN  '}  {d.name}"
                       + ("" if d.closed else f": {d.remedy}"))
    if not all(d.closed for d in found):
        ctx.exit(1)


@cluster.command(name="shutdown")
@click.option("--reason", default="", help="Why (shown by cluster status).")
@click.option("--cancel", is_flag=True, help="The cluster is not going down after all.")
@format_option
@click.pass_context
def shutdown_(ctx: click.Context, reason: str, cancel: bool, fmt: str) -> None:
    """Prepare a whole-cluster shutdown: from now on a node that stops (pvc-flush.service)
    shuts its VMs down where they are instead of moving them to nodes that stop next, and
    each node's unflush at boot starts its own again. The first node that boots ends it."""
    from pvc.node import power
    c = connect(ctx)
    if cancel:
        ended = power.end_cluster_shutdown(c)
        data: dict[str, Any] = {"shutdown": None, "changed": ended}
        text = ("the whole-cluster shutdown is called off: nodes that stop move their VMs "
                "again" if ended else "no whole-cluster shutdown was under way; nothing changed")
    else:
        record = power.begin_cluster_shutdown(c, reason)
        data = {"shutdown": record, "changed": True}
        text = ("the whole cluster is going down: stop the nodes in any order; each shuts its "
                "VMs down where they are, and starts them again when it boots")
    if fmt == "json":
        emit_json(data)
    else:
        click.echo(text)


@cluster.command()
@click.argument("switch", metavar="on|off", type=click.Choice(["on", "off"]))
@click.option("--reason", default="", help="Why (shown by cluster status and every command).")
@yes_option
@format_option
@click.pass_context
def maintenance(ctx: click.Context, switch: str, reason: str, yes: bool, fmt: str) -> None:
    """Maintenance mode: while on, nothing acts on its own (no automatic restart of a dead VM,
    no fencing, no database leader move, no election while the primary lives); what you ask
    for still runs. Every command says so first."""
    from pvc.operations import holds
    c = connect(ctx)
    if switch == "on":
        op = holds.maintenance_on(c, reason)
    else:
        if c.maintenance() is not None:
            waiting = holds.queued_operations(c)
            if waiting:
                confirm(yes, f"{len(waiting)} operation(s) are not finished "
                             f"({', '.join(o.kind + ' ' + o.target for o in waiting[:5])}); "
                             "the cluster acts on its own again. Turn maintenance off?")
        op = holds.maintenance_off(c, reason)
    if fmt == "json":
        emit_json({"maintenance": c.maintenance(), "operation": op.to_json()})
    elif switch == "on":
        click.echo("maintenance on: nothing acts on its own until `pvc cluster maintenance "
                   "off`")
    else:
        click.echo("maintenance off: the cluster acts on its own again")


@cluster.command()
@format_option
@click.pass_context
def status(ctx: click.Context, fmt: str) -> None:
    """Nodes, VMs and operations, counted by state."""
    data = status_data(connect(ctx))
    if fmt == "json":
        emit_json(data)
        return
    click.echo(f"cluster {data['name']} ({data['zookeeper']}): "
               f"{'healthy' if data['healthy'] else 'DEGRADED'}, primary {data['primary'] or '-'}"
               + (f", floating IP {data['floating_ip']}" if data["floating_ip"] else ""))
    from pvc.operations.holds import describe
    if data["maintenance"]:
        click.echo(f"  maintenance ON {describe(data['maintenance'])}: nothing acts on its own")
    for name, held in sorted(data["cordoned"].items()):
        click.echo(f"  cordoned    {name} {describe(held)}")
    if data["shutdown"]:
        s = data["shutdown"]
        click.echo(f"  shutdown    the whole cluster is going down (since {stamp(s['since'])}, "
                   f"by {s['by']}{': ' + s['reason'] if s.get('reason') else ''})")
    if data["metrics"]:
        click.echo(f"  metrics     {data['metrics']} (the primary's; bearer token)")
    if data["dns"]:
        d = data["dns"]
        click.echo(f"  dns         {d['address']}:{d['port']} (PowerDNS on every coordinator), "
                   f"zones {', '.join(d['zones']) or '-'}, aggregator {d['aggregator'] or '-'}")
    if len(data["zookeeper_members"]) > 1:
        click.echo("  zookeeper   " + ", ".join(f"{m} {mode}" for m, mode in
                                                data["zookeeper_members"].items()))
    db = data["database"]
    if db.get("members"):
        members = ", ".join(f"{m['name']} {m['role']} {m['state']}"
                            + (f" lag {m['lag']}" if m.get("lag") else "")
                            for m in db["members"])
        click.echo(f"  database    leader {db['leader'] or '-'}; {members}")
    storage = data["storage"]
    if storage:
        o = storage.get("osds", {})
        click.echo(f"  storage     Ceph {storage['health']}; OSDs {o.get('up', 0)}/"
                   f"{o.get('total', 0)} up, {o.get('in', 0)} in"
                   + (f"; flags {', '.join(storage['flags'])}" if storage.get("flags") else ""))
    broker = data["broker"]
    if broker:
        replicas = ", ".join(f"{r['address']} {r['state']}" for r in broker["replicas"]) or "-"
        up = sum(1 for s in broker["sentinels"].values() if s == "up")
        click.echo(f"  broker      master {broker['master'] or '-'}; replicas {replicas}; "
                   f"Sentinels {up}/{len(broker['sentinels'])} up")
    for section in ("nodes", "vms", "operations"):
        parts = []
        for key, counts in data[section].items():
            if isinstance(counts, dict) and counts:
                parts.append(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        click.echo(f"  {section:<11} {data[section]['total']} total" +
                   ("; " + "; ".join(parts) if parts else ""))
    holder = data["flush_lock"]["holder"]
    click.echo("  flush lock  " + ("free" if holder is None else
                                   f"held by {holder.get('node')}'s {holder.get('kind')} "
                                   f"(op {holder.get('op')}), "
                                   f"{len(data['flush_lock']['queue'])} queued"))
    for reason in data["reasons"]:
        click.echo(f"  degraded:   {reason}")
