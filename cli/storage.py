"""`pvc storage …`: the cluster's Ceph (health, OSDs) and the VM disks on it (pools, volumes,
snapshots)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from cli.common import (
    cluster,
    confirm,
    emit_json,
    format_option,
    load_config,
    pairs,
    table,
    wait_timeout_option,
    yes_option,
)
from pvc.storage.manage import size_text

if TYPE_CHECKING:
    from pvc.storage.ceph import Ceph


@click.group()
def storage() -> None:
    """Ceph: status, osd list, pool add|list|remove, volume add|list|info|resize|clone|rename|
    remove|upload, volume snapshot add|list|rollback|remove. A VM's disk names its volume:
    <disk type='network'><source protocol='rbd' name='POOL/VOLUME'/>…"""


def ceph(ctx: click.Context) -> "Ceph":
    """A connection to Ceph as pvc's user, closed when the command ends."""
    root = ctx.find_root()
    if "ceph" not in root.obj:
        from pvc.storage.ceph import connect
        root.obj["ceph"] = connect(load_config(ctx).cluster.storage)
        root.call_on_close(root.obj["ceph"].close)
    return root.obj["ceph"]


def show(rows: list[dict[str, Any]], fmt: str, columns: list[tuple[str, str]],
         sizes: tuple[str, ...] = ()) -> None:
    """Rows as JSON (bytes as numbers, times in ISO) or as a table (sizes as 10G, 512M)."""
    if fmt == "json":
        emit_json([{k: v for k, v in r.items() if not k.endswith("_text")} for r in rows])
        return
    table([{**r, **{k: size_text(r[k]) for k in sizes}} for r in rows], columns)


def vms(ctx: click.Context) -> list[Any]:
    return cluster(ctx).vms()


class Size(click.ParamType):
    name = "size"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        from pvc.core.errors import InvalidInput
        from pvc.storage.manage import parse_size
        try:
            return parse_size(str(value))
        except InvalidInput as e:
            self.fail(str(e), param, ctx)


class VolumeRef(click.ParamType):
    """POOL/VOLUME, or VOLUME in the cluster's default pool."""
    name = "POOL/VOLUME"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[str, str]:
        from pvc.core.errors import InvalidInput
        from pvc.storage.manage import split_volume
        text = str(value)
        if "/" not in text and ctx is not None:
            text = f"{load_config(ctx).cluster.storage.pool}/{text}"
        try:
            return split_volume(text)
        except InvalidInput as e:
            self.fail(str(e), param, ctx)


VOLUME = VolumeRef()


# ------------------------------------------------------------------------------ cluster

@storage.command()
@format_option
@click.pass_context
def status(ctx: click.Context, fmt: str) -> None:
    """Ceph's health (with each check named), monitors, OSDs, flags and usage."""
    from pvc.storage import manage
    st = manage.status(ceph(ctx))
    if fmt == "json":
        emit_json(st)
        return
    click.echo(f"health:    {st['health']}")
    for name, message in st["checks"].items():
        click.echo(f"  {name}: {message}")
    mons = st["monitors"]
    click.echo(f"monitors:  {len(mons['quorum'])}/{mons['total']} in quorum "
               f"({', '.join(mons['quorum'])})")
    o = st["osds"]
    click.echo(f"osds:      {o['up']}/{o['total']} up, {o['in']} in")
    flags = st["flags"] + [f"{f} on {host}" for host, fs in sorted(st["host_flags"].items())
                           for f in fs]
    click.echo(f"flags:     {', '.join(flags) or '-'}")
    click.echo("pgs:       " + ", ".join(f"{n} {s}" for s, n in sorted(st["pgs"].items())))
    u = st["usage"]
    click.echo(f"usage:     {size_text(u['used'])} used, {size_text(u['available'])} "
               f"available of {size_text(u['total'])}")


@storage.group()
def osd() -> None:
    """Ceph's OSDs (one per storage node's disk)."""


@osd.command(name="list")
@format_option
@click.pass_context
def osd_list(ctx: click.Context, fmt: str) -> None:
    """Every OSD: its node, up/in, size and use."""
    from pvc.storage import manage
    show(manage.osds(ceph(ctx)), fmt, [
        ("name", "OSD"), ("node", "NODE"), ("up", "UP"), ("in", "IN"), ("size", "SIZE"),
        ("used", "USED"), ("utilization", "USE%"), ("pgs", "PGS")], sizes=("size", "used"))


# ------------------------------------------------------------------------------ pools

@storage.group()
def pool() -> None:
    """Pools (each volume lives in one)."""


@pool.command(name="add")
@click.argument("name")
@click.option("--pgs", default=32, show_default=True, help="Placement groups (a power of 2).")
@click.option("--replicas", default=3, show_default=True,
              help="Copies of each object (it serves with one fewer).")
@format_option
@click.pass_context
def pool_add(ctx: click.Context, name: str, pgs: int, replicas: int, fmt: str) -> None:
    """Add pool NAME for RBD volumes."""
    from pvc.storage import manage
    c = ceph(ctx)
    manage.pool_add(c, name, pgs, replicas)
    if fmt == "json":
        emit_json(next(p for p in manage.pools(c) if p["name"] == name))
    else:
        click.echo(f"pool {name} added ({replicas} replicas, {pgs} placement groups)")


@pool.command(name="list")
@format_option
@click.pass_context
def pool_list(ctx: click.Context, fmt: str) -> None:
    """Every pool, its replicas and use."""
    from pvc.storage import manage
    show(manage.pools(ceph(ctx)), fmt, [
        ("name", "POOL"), ("replicas", "REPLICAS"), ("pgs", "PGS"), ("objects", "OBJECTS"),
        ("stored", "STORED"), ("max_available", "AVAILABLE"), ("applications", "APPS")],
        sizes=("stored", "max_available"))


@pool.command(name="remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove it with the volumes it holds.")
@yes_option
@click.pass_context
def pool_remove(ctx: click.Context, name: str, force: bool, yes: bool) -> None:
    """Remove pool NAME (refused while a VM's disk is in it)."""
    from pvc.storage import manage
    confirm(yes, f"Remove pool {name}{' and every volume in it' if force else ''}?")
    removed = manage.pool_remove(ceph(ctx), vms(ctx), name, force)
    click.echo(f"pool {name} removed" + (f" with {len(removed)} volumes" if removed else ""))


# ------------------------------------------------------------------------------ volumes

@storage.group()
def volume() -> None:
    """Volumes (RBD images): VMs' disks."""


def _volume_text(v: dict[str, Any]) -> dict[str, Any]:
    return {**v, "size_text": size_text(v["size"]), "volume": f"{v['pool']}/{v['name']}"}


@volume.command(name="add")
@click.argument("ref", type=VOLUME)
@click.argument("size", type=Size())
@format_option
@click.pass_context
def volume_add(ctx: click.Context, ref: tuple[str, str], size: int, fmt: str) -> None:
    """Add volume POOL/VOLUME of SIZE (e.g. 10G)."""
    from pvc.storage import manage
    c = ceph(ctx)
    manage.volume_add(c, *ref, size)
    if fmt == "json":
        emit_json(manage.volume_info(c, [], *ref))
    else:
        click.echo(f"volume {ref[0]}/{ref[1]} added ({size_text(size)})")


@volume.command(name="list")
@click.argument("pool_name", metavar="[POOL]", required=False, default="")
@format_option
@click.pass_context
def volume_list(ctx: click.Context, pool_name: str, fmt: str) -> None:
    """Every volume (of POOL), its size, snapshots and VM."""
    from pvc.storage import manage
    rows = [{**_volume_text(v), "snapshot_count": len(v["snapshots"])}
            for v in manage.volumes(ceph(ctx), vms(ctx), pool_name)]
    show(rows, fmt, [("volume", "VOLUME"), ("size", "SIZE"), ("snapshot_count", "SNAPS"),
                     ("vm", "VM"), ("lockers", "LOCKED BY")], sizes=("size",))


@volume.command(name="info")
@click.argument("ref", type=VOLUME)
@format_option
@click.pass_context
def volume_info(ctx: click.Context, ref: tuple[str, str], fmt: str) -> None:
    """One volume: size, features, snapshots, its VM, who has it open and locked."""
    from pvc.storage import manage
    info = _volume_text(manage.volume_info(ceph(ctx), vms(ctx), *ref))
    if fmt == "json":
        emit_json(info)
        return
    pairs(info, ["volume", "size_text", "vm", "snapshots", "watchers", "lockers",
                 "objects", "features"])


@volume.command(name="resize")
@click.argument("ref", type=VOLUME)
@click.argument("size", type=Size())
@click.option("--shrink", is_flag=True, help="Allow a smaller size (its end is cut off).")
@click.pass_context
def volume_resize(ctx: click.Context, ref: tuple[str, str], size: int, shrink: bool) -> None:
    """Resize volume POOL/VOLUME to SIZE (a VM sees a larger disk at its next start)."""
    from pvc.storage import manage
    manage.volume_resize(ceph(ctx), vms(ctx), *ref, size, shrink)
    click.echo(f"volume {ref[0]}/{ref[1]} resized to {size_text(size)}")


@volume.command(name="clone")
@click.argument("ref", type=VOLUME)
@click.argument("new")
@click.pass_context
def volume_clone(ctx: click.Context, ref: tuple[str, str], new: str) -> None:
    """Copy volume POOL/VOLUME to NEW (a name in the same pool, or POOL/NAME)."""
    from pvc.storage import manage
    to_pool, to_name = manage.volume_clone(ceph(ctx), *ref, new)
    click.echo(f"volume {ref[0]}/{ref[1]} copied to {to_pool}/{to_name}")


@volume.command(name="rename")
@click.argument("ref", type=VOLUME)
@click.argument("new")
@click.pass_context
def volume_rename(ctx: click.Context, ref: tuple[str, str], new: str) -> None:
    """Rename volume POOL/VOLUME to NEW (refused while a VM's disk)."""
    from pvc.storage import manage
    manage.volume_rename(ceph(ctx), vms(ctx), *ref, new)
    click.echo(f"volume {ref[0]}/{ref[1]} renamed to {ref[0]}/{new}")


@volume.command(name="remove")
@click.argument("ref", type=VOLUME)
@yes_option
@click.pass_context
def volume_remove(ctx: click.Context, ref: tuple[str, str], yes: bool) -> None:
    """Remove volume POOL/VOLUME and its snapshots (refused while a VM's disk)."""
    from pvc.storage import manage
    confirm(yes, f"Remove volume {ref[0]}/{ref[1]} and its snapshots?")
    manage.volume_remove(ceph(ctx), vms(ctx), *ref)
    click.echo(f"volume {ref[0]}/{ref[1]} removed")


# ------------------------------------------------------------------------------ snapshots

@volume.group()
def snapshot() -> None:
    """Snapshots of a volume."""


@snapshot.command(name="add")
@click.argument("ref", type=VOLUME)
@click.argument("name")
@click.pass_context
def snapshot_add(ctx: click.Context, ref: tuple[str, str], name: str) -> None:
    """Snapshot volume POOL/VOLUME as NAME."""
    from pvc.storage import manage
    manage.snapshot_add(ceph(ctx), *ref, name)
    click.echo(f"snapshot {ref[0]}/{ref[1]}@{name} added")


@snapshot.command(name="list")
@click.argument("ref", type=VOLUME)
@format_option
@click.pass_context
def snapshot_list(ctx: click.Context, ref: tuple[str, str], fmt: str) -> None:
    """The snapshots of volume POOL/VOLUME."""
    from pvc.core.timefmt import iso
    rows = [{**r, "created_text": iso(r["created"])} for r in ceph(ctx).snapshots(*ref)]
    show(rows, fmt, [("name", "SNAPSHOT"), ("size", "SIZE"), ("created_text", "CREATED")],
         sizes=("size",))


@snapshot.command(name="rollback")
@click.argument("ref", type=VOLUME)
@click.argument("name")
@yes_option
@click.pass_context
def snapshot_rollback(ctx: click.Context, ref: tuple[str, str], name: str, yes: bool) -> None:
    """Roll volume POOL/VOLUME back to snapshot NAME (refused while a VM's disk)."""
    from pvc.storage import manage
    confirm(yes, f"Roll {ref[0]}/{ref[1]} back to {name}? What was written since is lost.")
    manage.snapshot_rollback(ceph(ctx), vms(ctx), *ref, name)
    click.echo(f"volume {ref[0]}/{ref[1]} rolled back to {name}")


@snapshot.command(name="remove")
@click.argument("ref", type=VOLUME)
@click.argument("name")
@click.pass_context
def snapshot_remove(ctx: click.Context, ref: tuple[str, str], name: str) -> None:
    """Remove snapshot NAME of volume POOL/VOLUME."""
    ceph(ctx).snapshot_remove(*ref, name)
    click.echo(f"snapshot {ref[0]}/{ref[1]}@{name} removed")


@volume.command(name="upload")
@click.argument("ref", type=VOLUME)
@click.argument("file")
@click.option("--image-format", type=click.Choice(["raw", "qcow2"]), default=None,
              help="The file's format (default: what qemu-img finds).")
@click.option("--node", default="", help="The storage node that reads FILE and writes the "
                                         "volume (default: this node, else the primary).")
@click.option("--reason", default="", help="Why (kept in the operation record).")
@click.option("--wait", is_flag=True, help="Follow it to the end with its progress.")
@wait_timeout_option()
@format_option
@click.pass_context
def volume_upload(ctx: click.Context, ref: tuple[str, str], file: str, image_format: str | None,
                  node: str, reason: str, wait: bool, wait_timeout: float | None,
                  fmt: str) -> None:
    """Write image FILE (raw or qcow2; read on the node that runs it) into volume
    POOL/VOLUME, made the image's size when it does not exist. An operation: --wait follows
    it with a progress bar."""
    import os

    from cli.ops import run_request
    from pvc.core.errors import NotFound
    from pvc.node import uploads
    c = cluster(ctx)
    here = load_config(ctx).node.name
    node = node or here or c.store.get_text(c.schema.primary) or ""
    if not node:
        raise NotFound("no node to run the upload: no primary coordinator (give --node)")
    path = os.path.abspath(file)
    if node == here and not os.path.isfile(path):
        raise NotFound(f"{path}: no such file")
    req = uploads.request(c, f"{ref[0]}/{ref[1]}", path, image_format or "", node, reason)
    run_request(ctx, req, wait, fmt, wait_timeout)
