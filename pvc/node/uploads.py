"""`pvc storage volume upload POOL/VOLUME FILE`: an image (raw or qcow2) written into a volume
by a storage node's worker, with progress. The file is read on the node that runs the upload
(the local node when the command runs on one, else the primary; `--node` to choose): QEMU's
own `qemu-img convert` reads it and writes the volume through librbd, as a guest's disk is
written. A volume that does not exist is made the image's size; one that is a VM's disk is
refused (it would be written under the running guest)."""
from __future__ import annotations

import json
import os
import re
import subprocess
from typing import TYPE_CHECKING, Any

from pvc.core.cluster import Cluster
from pvc.core.config import StorageConfig
from pvc.core.errors import Conflict, InvalidInput, NotFound, OperationFailed
from pvc.core.store import NodeExists
from pvc.operations import records
from pvc.operations.requests import Request, require_acting
from pvc.operations.runner import Runner
from pvc.storage import manage
from pvc.vm import disks

if TYPE_CHECKING:
    from pvc.node.context import NodeContext

FORMATS = ("raw", "qcow2")
PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def request(cluster: Cluster, ref: str, path: str, fmt: str, node: str,
            reason: str = "") -> Request:
    """Record an upload of file `path` (on `node`) into volume ref; the caller submits it."""
    pool, volume = manage.split_volume(ref)
    if fmt and fmt not in FORMATS:
        raise InvalidInput(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    target = cluster.node(node)
    if not target.enable_storage:
        raise Conflict(f"node {node} has no storage (node.enable_storage): it cannot reach "
                       "the volume")
    require_acting(target, "upload")
    manage.refuse_in_use(cluster.vms(), pool, volume, "written by an upload")
    op = records.new_operation("volume.upload", f"{pool}/{volume}", f"{pool}/{volume}", node,
                               reason, args={"file": path, "format": fmt})
    cluster.store.ensure(cluster.schema.volume_operations)
    tx = cluster.store.transaction()
    tx.create(cluster.schema.operation(op.id), op.to_json())
    tx.create(cluster.schema.volume_operation(f"{pool}/{volume}"), op.id, refuse={
        NodeExists: Conflict(f"volume {pool}/{volume} already has an upload in flight "
                             f"(pvc task list)")})
    tx.commit()
    return Request(op, submit=True)


def execute(ctx: "NodeContext", run: Runner) -> str:
    assert run.record is not None
    pool, volume = run.record.target_id.split("/", 1)
    path, fmt = run.record.args["file"], run.record.args.get("format", "")
    storage = ctx.config.cluster.storage
    image = _image_info(path, fmt)
    size = int(image["virtual-size"])
    fmt = fmt or str(image["format"])
    manage.refuse_in_use(ctx.cluster.vms(), pool, volume, "written by an upload")
    with disks.connect(storage) as ceph:
        if ceph.volume_exists(pool, volume):
            have = int(ceph.volume_info(pool, volume)["size"])
            if have < size:
                raise OperationFailed(f"volume {pool}/{volume} ({manage.size_text(have)}) is "
                                      f"smaller than the image ({manage.size_text(size)})")
        else:
            ceph.volume_add(pool, volume, size)
            run.note(f"volume {pool}/{volume} added ({manage.size_text(size)})")
    run.progress(f"writing {path} ({fmt}, {manage.size_text(size)})", done=0, total=100)
    _convert(path, fmt, _rbd_target(storage, pool, volume), run)
    return f"{path} ({fmt}, {manage.size_text(size)}) written to volume {pool}/{volume}"


def _image_info(path: str, fmt: str) -> dict[str, Any]:
    cmd = ["qemu-img", "info", "--output=json"] + (["-f", fmt] if fmt else []) + [path]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise OperationFailed("qemu-img is not installed on this node (Debian: qemu-utils)") \
            from None
    if res.returncode != 0:
        why = (res.stderr.strip().splitlines() or ["unreadable"])[-1]
        if "No such file" in why:
            raise NotFound(f"{path}: no such file on this node")
        raise OperationFailed(f"{path}: not an image qemu-img reads ({why})")
    info = dict(json.loads(res.stdout))
    if info.get("format") not in FORMATS:
        raise OperationFailed(f"{path} is {info.get('format')}: only raw and qcow2 are uploaded")
    return info


def _rbd_target(storage: StorageConfig, pool: str, volume: str) -> str:
    """The volume as qemu-img names it (librbd, as pvc's cephx user)."""
    target = f"rbd:{pool}/{volume}:id={storage.client}:conf={storage.ceph_conf}"
    return target + (f":keyring={storage.keyring}" if storage.keyring else "")


def _convert(path: str, fmt: str, target: str, run: Runner) -> None:
    """qemu-img convert into the existing volume, its progress (-p) read as it prints it."""
    cmd = ["qemu-img", "convert", "-p", "-n", "-f", fmt, "-O", "raw", path, target]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    last = -1
    out = proc.stdout
    for chunk in iter(lambda: os.read(out.fileno(), 256), b""):
        found = PROGRESS.findall(chunk)
        if found and int(float(found[-1])) > last:
            last = int(float(found[-1]))
            run.progress(f"writing {path}: {last}%", done=last, total=100)
    if proc.wait() != 0:
        why = (proc.stderr.read().decode(errors="replace").strip().splitlines()
               or ["failed"])[-1]
        raise OperationFailed(f"qemu-img could not write the volume: {why}")
    run.progress(f"wrote {path}", done=100, total=100)
