"""`pvc network …`: the cluster's managed networks (VXLAN + a bridge on every node with
networking; the gateway, DHCP and the zone on the primary)."""
from __future__ import annotations

from typing import Any

import click

from cli import complete
from cli.common import cluster, emit_json, format_option, pairs, table

VNI = click.IntRange(min=0)   # the range is checked with the rest, in one message


@click.group()
def network() -> None:
    """Managed networks: add, list, info, remove, leases. A VM joins one with an interface on its
    bridge: <interface type='bridge'><source bridge='vmbrVNI'/>…"""


def _json(net: Any, c: Any) -> dict[str, Any]:
    from pvc.network import managed
    used = set(managed.users(c, net.vni))
    return {**net.to_json(), "bridge": net.bridge, "vxlan": net.vxlan,
            "vms": sorted(vm.name for vm in c.vms() if vm.uuid in used)}


@network.command()
@click.argument("vni", type=VNI, shell_complete=complete.networks)
@click.option("--domain", required=True, help="DNS domain of the network (e.g. sandbox.pvc).")
@click.option("--ipv4", required=True, metavar="CIDR", help="Subnet, e.g. 10.100.0.0/24.")
@click.option("--gateway", required=True, metavar="IP", help="The gateway's address (held by "
                                                             "the primary coordinator).")
@click.option("--dhcp-start", default="", metavar="IP", help="First address DHCP hands out.")
@click.option("--dhcp-end", default="", metavar="IP", help="Last address DHCP hands out.")
@click.option("--description", default="", help="What the network is for.")
@format_option
@click.pass_context
def add(ctx: click.Context, vni: int, domain: str, ipv4: str, gateway: str, dhcp_start: str,
        dhcp_end: str, description: str, fmt: str) -> None:
    """Add managed network VNI (1-16777215)."""
    from pvc.network import managed
    c = cluster(ctx)
    net = managed.add(c, managed.ManagedNetwork(vni, domain, ipv4, gateway, dhcp_start,
                                                dhcp_end, description))
    if fmt == "json":
        emit_json(_json(net, c))
    else:
        dhcp = f", DHCP {net.dhcp_start}-{net.dhcp_end}" if net.dhcp else ", no DHCP"
        click.echo(f"network {net.vni} added: {net.ipv4} gateway {net.gateway}{dhcp}, domain "
                   f"{net.domain}; VMs join it on bridge {net.bridge}")


@network.command(name="list")
@format_option
@click.pass_context
def list_(ctx: click.Context, fmt: str) -> None:
    """Every managed network."""
    from pvc.network import managed
    c = cluster(ctx)
    rows = [_json(n, c) for n in managed.all_networks(c)]
    if fmt == "json":
        emit_json(rows)
        return
    for r in rows:
        r["dhcp"] = f"{r['dhcp_start']}-{r['dhcp_end']}" if r["dhcp_start"] else "-"
        r["vm_count"] = len(r["vms"])
    table(rows, [("vni", "VNI"), ("domain", "DOMAIN"), ("ipv4", "IPV4"),
                 ("gateway", "GATEWAY"), ("dhcp", "DHCP"), ("bridge", "BRIDGE"),
                 ("vm_count", "VMS"), ("description", "DESCRIPTION")])


@network.command()
@click.argument("vni", type=VNI, shell_complete=complete.networks)
@format_option
@click.pass_context
def info(ctx: click.Context, vni: int, fmt: str) -> None:
    """One managed network, and the VMs on it."""
    from pvc.network import managed
    c = cluster(ctx)
    data = _json(managed.get(c, vni), c)
    if fmt == "json":
        emit_json(data)
    else:
        pairs(data)


@network.command()
@click.argument("vni", type=VNI, shell_complete=complete.networks)
@format_option
@click.pass_context
def remove(ctx: click.Context, vni: int, fmt: str) -> None:
    """Remove a managed network no VM uses (nodes take its bridges down)."""
    from pvc.network import managed
    net = managed.remove(cluster(ctx), vni)
    if fmt == "json":
        emit_json({"removed": net.to_json()})
    else:
        click.echo(f"network {net.vni} ({net.domain}) removed")


@network.command()
@click.argument("vni", type=VNI, shell_complete=complete.networks)
@format_option
@click.pass_context
def leases(ctx: click.Context, vni: int, fmt: str) -> None:
    """The DHCP leases the network's gateway handed out (kept in ZooKeeper: they survive the
    gateway moving to a new primary)."""
    import time

    from pvc.network import managed
    rows = [lease.to_json() for lease in managed.leases(cluster(ctx), vni)]
    if fmt == "json":
        emit_json(rows)
        return
    for r in rows:
        r["expires"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["expiry"])) \
            if r["expiry"] else "never"
    table(rows, [("ip", "IP"), ("mac", "MAC"), ("hostname", "HOSTNAME"),
                 ("expires", "EXPIRES")])
