"""`pvc sandbox …`: a whole cluster on this machine, for trying pvc and for tests."""
from __future__ import annotations

import sys

import click

from cli.common import emit_json, format_option


@click.group()
def sandbox() -> None:
    """A pvc cluster on this machine: ZooKeeper, Redis, Flower and N simulated nodes."""


@sandbox.command()
@click.option("--nodes", default=3, show_default=True, help="Simulated nodes.")
@click.option("--vms", type=int, default=None,
              help="Demo VMs (default: 3 for qemu, 10 for test).")
@click.option("--hypervisor", "kind", type=click.Choice(["qemu", "test"]), default="qemu",
              show_default=True, help="qemu: real tiny guests (TCG); test: libvirt's test "
                                      "driver, cheap, for hundreds of VMs.")
@click.option("--database/--no-database", default=True, show_default=True,
              help="PostgreSQL under Patroni on the coordinators (the DNS aggregator's).")
@click.option("--storage/--no-storage", default=True, show_default=True,
              help="Ceph on the nodes (a monitor and a manager on each coordinator, an OSD "
                   "on each node) and the demo VMs' disks on it.")
@click.option("--monitoring/--no-monitoring", default=True, show_default=True,
              help="pvc's metrics endpoint on the primary, and a Prometheus scraping it "
                   "(and Patroni) with its UI on 127.0.0.1.")
@click.option("--port-offset", default=0, hidden=True, help="Shift every port (tests).")
def up(nodes: int, vms: int | None, kind: str, database: bool, storage: bool,
       monitoring: bool, port_offset: int) -> None:
    """Start the sandbox and return when it is usable."""
    from pvc.sandbox import sandbox as sb
    layout = sb.default_layout(port_offset)
    state, started = sb.up(layout, nodes=nodes, vms=vms, kind=kind,
                           say=lambda m: click.echo(m, err=True), database=database,
                           storage=storage, monitoring=monitoring)
    if not started:
        click.echo(f"the sandbox is already running ({state.hypervisor}, "
                   f"{len(state.nodes)} nodes, in {layout.dir}); nothing changed. "
                   "Stop it with: pvc sandbox down")
        return
    st = sb.status(layout)
    demo = state.demo_vms[0] if state.demo_vms else "VM"
    fip = layout.net.floating_ip.split("/")[0]
    name = f"{demo}.sandbox.pvc" if kind == "qemu" else "ns1.sandbox.pvc"
    dig = (f"\n  dig +short @{fip} {name}               (PowerDNS, fed by the DNS aggregator)"
           if state.database else "")
    disks = ""
    if state.storage:
        disks = "\n  pvc storage status && pvc storage volume list    (Ceph, the VMs' disks)"
    if state.storage and kind == "qemu":
        disks += f"\n  pvc vm log {demo} | grep disk          (its counter, on its RBD disk)"
    prometheus = ""
    if state.monitoring:
        prom = st["prometheus"]
        prometheus = (f"  Prometheus: {prom['url']}  user {prom['user']}  password "
                      f"{sb.prometheus_password(layout)}  (try the query pvc_vms)\n"
                      f"  Metrics:   {prom['metrics']}  (bearer token in "
                      f"{prom['metrics_token_file']})\n")
    click.echo(f"""
pvc sandbox is up: {len(state.nodes)} {kind} nodes ({', '.join(state.nodes)}), \
{len(state.demo_vms)} demo VMs.
  Flower:    {st['flower']['url']}  user {sb.FLOWER_USER}  password {sb.flower_password(layout)}
{prometheus}  Config:    {layout.client_config} (used by plain `pvc` commands until `pvc sandbox down`)

Try:
  pvc cluster status
  pvc node list
  pvc vm list --watch                    (redrawn on every change; Ctrl-C to leave)
  pvc vm stop {demo} --wait && pvc vm start {demo} --wait
  pvc vm modify {demo} --editor          (change its XML; --restart applies it now)
  pvc vm log {demo} --follow              (Ctrl-C to stop)
  pvc vm list --stats && pvc node log hv1 --lines 20
  pvc node flush hv1 --wait && pvc node unflush hv1 --wait
  pvc node primary hv2 --wait            (the floating IP and the database leader move)
  pvc network list && pvc network leases 100{dig}{disks}
  pvc cluster maintenance on --reason test    (nothing acts on its own until `off`)
  pvc node cordon hv3                    (no new VMs there; `uncordon` to undo)
  pvc task list
  source <(pvc completion bash)          (tab-completes VM and node names)
  pvc sandbox down""")


@sandbox.command()
@click.option("--port-offset", default=0, hidden=True)
def down(port_offset: int) -> None:
    """Stop every process of the sandbox and remove its state."""
    from pvc.sandbox import sandbox as sb
    if sb.down(sb.default_layout(port_offset), say=lambda m: click.echo(m, err=True)):
        click.echo("sandbox stopped")
    else:
        click.echo("no sandbox is running")


@sandbox.command()
@click.argument("action", type=click.Choice(["start", "stop", "restart"]))
@click.argument("name", metavar="PROCESS")
@click.option("--port-offset", default=0, hidden=True)
@format_option
def process(action: str, name: str, port_offset: int, fmt: str) -> None:
    """Start, stop or restart one sandbox process (e.g. worker-hv1); a stopped process stays
    stopped (the supervisor does not start it again) until started."""
    from pvc.sandbox import sandbox as sb
    info = sb.process(sb.default_layout(port_offset), action, name)
    if fmt == "json":
        emit_json({"name": name, **info})
    else:
        click.echo(f"{name}: {info['state'].lower()}" + (f", pid {info['pid']}"
                                                        if info["pid"] else ""))


@sandbox.command()
@click.option("--port-offset", default=0, hidden=True)
@format_option
def status(port_offset: int, fmt: str) -> None:
    """Is the sandbox running, and are all its processes alive?"""
    from pvc.sandbox import roles
    from pvc.sandbox import sandbox as sb
    layout = sb.default_layout(port_offset)
    st = sb.status(layout)
    if st["running"]:
        st["control_plane"] = roles.control_plane(layout) if st["processes"] else {}
    if fmt == "json":
        emit_json(st)
    elif not st["running"]:
        click.echo(f"no sandbox is running ({st['dir']})")
    else:
        click.echo(f"sandbox {'healthy' if st['healthy'] else 'DEGRADED'}: {st['hypervisor']}, "
                   f"nodes {', '.join(st['nodes'])}, {len(st['demo_vms'])} demo VMs, "
                   f"Flower {st['flower']['url']}")
        for name, p in sorted(st["processes"].items()):
            restarts = f", restarted {p['restarts']}x" if p["restarts"] else ""
            click.echo(f"  {name:<14} {p['state'].lower():<9} pid {p['pid']}{restarts}")
        for node, members in st["control_plane"].items():
            click.echo(f"  {node}: ZooKeeper {members['zookeeper']}, Redis {members['redis']}")
    if not st["running"] or not st.get("healthy", False):
        sys.exit(1 if st["running"] else 0)
