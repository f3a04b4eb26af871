"""The cluster's Ceph, through Ceph's own Python bindings (librados, librbd): the only module
that imports them. Every call is bounded (the monitors' and OSDs' operation timeouts), and every
failure an operator can cause or meet becomes one of pvc's errors with one clear line.

Monitor commands are the JSON ones the `ceph` tool sends (`{"prefix": "osd tree", ...}`); RBD
work goes through librbd, as QEMU's own disk driver does."""
from __future__ import annotations

import errno
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import rados
import rbd

from pvc.core.config import StorageConfig
from pvc.core.errors import Conflict, InvalidInput, NotFound, PvcError, Unavailable

ERRNO_ERRORS: dict[int, type[PvcError]] = {
    errno.ENOENT: NotFound, errno.EEXIST: Conflict, errno.EBUSY: Conflict,
    errno.ENOTEMPTY: Conflict, errno.EINVAL: InvalidInput, errno.ERANGE: InvalidInput,
    errno.ETIMEDOUT: Unavailable, errno.EINTR: Unavailable, errno.EACCES: PvcError,
    errno.EPERM: PvcError, errno.ENOSPC: Conflict,
}

# librbd's image errors, by meaning
RBD_ERRORS: tuple[tuple[type[Exception], type[PvcError]], ...] = (
    (rbd.ImageNotFound, NotFound), (rbd.ImageExists, Conflict), (rbd.ImageBusy, Conflict),
    (rbd.ImageHasSnapshots, Conflict), (rbd.InvalidArgument, InvalidInput),
)


def _convert(e: Exception, what: str) -> PvcError:
    for kind, error in RBD_ERRORS:
        if isinstance(e, kind):
            return error(f"{what}: {_reason(e)}")
    if isinstance(e, (rados.TimedOut, rados.InterruptedOrTimeoutError)):
        return Unavailable(f"{what}: Ceph did not answer in time")
    if isinstance(e, rados.ObjectNotFound):
        return NotFound(f"{what}: not found")
    if isinstance(e, (rados.PermissionError, rados.PermissionDeniedError)):
        return PvcError(f"{what}: Ceph refused pvc's key ({_reason(e)})")
    return PvcError(f"{what}: {_reason(e)}")


def _reason(e: Exception) -> str:
    text = str(e)
    return text.split("]", 1)[-1].strip() if text.startswith("[errno") else text


@contextmanager
def _calling(what: str) -> Iterator[None]:
    try:
        yield
    except (rados.Error, rbd.Error) as e:
        raise _convert(e, what) from None


@dataclass(frozen=True)
class Locker:
    """A client holding an image's lock (the QEMU that writes it)."""
    client: str      # e.g. client.4308
    cookie: str      # e.g. "auto 140415030362640" (it holds a space)
    address: str     # e.g. 10.200.12.1:0/2000410500


class Ceph:
    """One connection to the cluster's Ceph as pvc's cephx user."""

    def __init__(self, cfg: StorageConfig) -> None:
        self.cfg = cfg
        seconds = str(self.seconds)   # Ceph takes whole seconds here
        conf = {"rados_mon_op_timeout": seconds, "rados_osd_op_timeout": seconds,
                "client_mount_timeout": seconds}
        if cfg.keyring:
            conf["keyring"] = cfg.keyring
        try:
            self.cluster = rados.Rados(conffile=cfg.ceph_conf, rados_id=cfg.client, conf=conf)
        except rados.Error as e:
            raise PvcError(f"cannot read Ceph's configuration {cfg.ceph_conf}: "
                           f"{_reason(e)}") from None

    @property
    def seconds(self) -> int:
        return math.ceil(self.cfg.timeout)

    def connect(self) -> "Ceph":
        try:
            self.cluster.connect(timeout=self.seconds)
        except (rados.Error, rbd.Error) as e:
            self.cluster.shutdown()
            raise Unavailable(f"cannot reach Ceph (monitors of {self.cfg.ceph_conf}): "
                              f"{_reason(e)}") from None
        return self

    def close(self) -> None:
        self.cluster.shutdown()

    def __enter__(self) -> "Ceph":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ monitor commands
    def command(self, prefix: str, **args: Any) -> Any:
        """A monitor command; its JSON answer (None when it has none)."""
        return self._run(self.cluster.mon_command, prefix, args)

    def mgr_command(self, prefix: str, **args: Any) -> Any:
        return self._run(self.cluster.mgr_command, prefix, args)

    def _run(self, send: Callable[..., tuple[int, bytes, str]], prefix: str,
             args: dict[str, Any]) -> Any:
        cmd = json.dumps({"prefix": prefix, "format": "json", **args})
        with _calling(f"ceph {prefix}"):
            ret, out, err = send(cmd, b"", timeout=self.seconds)
        if ret < 0:
            error = ERRNO_ERRORS.get(-ret, PvcError)
            raise error(f"ceph {prefix}: {err.strip() or errno.errorcode.get(-ret, ret)}")
        if not out.strip():
            return None
        # some answers are two JSON documents back to back (osd blocklist ls): the first
        value, _end = json.JSONDecoder().raw_decode(out.decode())
        return value

    # ------------------------------------------------------------------ cluster
    def status(self) -> dict[str, Any]:
        return dict(self.command("status"))

    def health(self) -> dict[str, Any]:
        return dict(self.command("health", detail="detail"))

    def df(self) -> dict[str, Any]:
        return dict(self.command("df", detail="detail"))

    def monitors(self) -> list[tuple[str, int]]:
        """(address, v1 port) of each monitor: what a libvirt disk's <host> names."""
        found = []
        for mon in self.command("mon dump")["mons"]:
            addrs = mon.get("public_addrs", {}).get("addrvec", [])
            v1 = next((a["addr"] for a in addrs if a["type"] == "v1"), mon.get("addr", ""))
            host, _, port = v1.split("/")[0].rpartition(":")
            found.append((host, int(port)))
        return found

    def osd_tree(self) -> list[dict[str, Any]]:
        return list(self.command("osd tree")["nodes"])

    def osd_df(self) -> list[dict[str, Any]]:
        return list(self.command("osd df")["nodes"])

    def osd_dump(self) -> dict[str, Any]:
        return dict(self.command("osd dump"))

    def set_flag(self, flag: str, on: bool) -> None:
        self.command("osd set" if on else "osd unset", key=flag)

    def set_group_flag(self, flag: str, host: str, on: bool) -> None:
        """A flag (noout, …) for the OSDs of one CRUSH host."""
        self.command("osd set-group" if on else "osd unset-group", flags=flag, who=[host])

    def host_flags(self) -> dict[str, list[str]]:
        """CRUSH hosts with flags of their own (osd set-group)."""
        return dict(self.osd_dump().get("crush_node_flags", {}))

    # ------------------------------------------------------------------ pools
    def pool_names(self) -> list[str]:
        with _calling("list pools"):
            return list(self.cluster.list_pools())

    def pool_exists(self, pool: str) -> bool:
        with _calling(f"pool {pool}"):
            return bool(self.cluster.pool_exists(pool))

    def pool_add(self, pool: str, pgs: int, size: int) -> None:
        self.command("osd pool create", pool=pool, pg_num=pgs, pgp_num=pgs)
        self.command("osd pool set", pool=pool, var="size", val=str(size))
        self.command("osd pool set", pool=pool, var="min_size", val=str(max(size - 1, 1)))
        with self.ioctx(pool) as io, _calling(f"pool {pool}"):
            rbd.RBD().pool_init(io, True)

    def pool_remove(self, pool: str) -> None:
        self.command("osd pool rm", pool=pool, pool2=pool,
                     yes_i_really_really_mean_it=True)

    @contextmanager
    def ioctx(self, pool: str) -> Iterator[Any]:
        with _calling(f"pool {pool}"):
            io = self.cluster.open_ioctx(pool)
        try:
            yield io
        finally:
            io.close()

    # ------------------------------------------------------------------ volumes (images)
    def volumes(self, pool: str) -> list[str]:
        with self.ioctx(pool) as io, _calling(f"volumes of {pool}"):
            return sorted(rbd.RBD().list(io))

    @contextmanager
    def image(self, pool: str, name: str, read_only: bool = False) -> Iterator[Any]:
        with self.ioctx(pool) as io:
            with _calling(f"volume {pool}/{name}"):
                img = rbd.Image(io, name, read_only=read_only)
            try:
                with _calling(f"volume {pool}/{name}"):
                    yield img
            finally:
                img.close()

    def volume_exists(self, pool: str, name: str) -> bool:
        return self.pool_exists(pool) and name in self.volumes(pool)

    def volume_add(self, pool: str, name: str, size: int) -> None:
        with self.ioctx(pool) as io, _calling(f"volume {pool}/{name}"):
            rbd.RBD().create(io, name, size, old_format=False)

    def volume_info(self, pool: str, name: str) -> dict[str, Any]:
        with self.image(pool, name, read_only=True) as img:
            stat = img.stat()
            return {"pool": pool, "name": name, "size": int(img.size()),
                    "objects": int(stat["num_objs"]), "object_size": int(stat["obj_size"]),
                    "features": rbd.RBD().features_to_string(img.features()).split(","),
                    "snapshots": [s["name"] for s in img.list_snaps()],
                    "watchers": [w["addr"] for w in img.watchers_list()],
                    "lockers": [lk.client for lk in self._lockers(img)]}

    def volume_resize(self, pool: str, name: str, size: int) -> None:
        with self.image(pool, name) as img:
            img.resize(size)

    def volume_copy(self, pool: str, name: str, to_pool: str, to_name: str) -> None:
        with self.image(pool, name, read_only=True) as img, self.ioctx(to_pool) as io:
            img.copy(io, to_name)

    def volume_rename(self, pool: str, name: str, new: str) -> None:
        with self.ioctx(pool) as io, _calling(f"volume {pool}/{name}"):
            rbd.RBD().rename(io, name, new)

    def volume_remove(self, pool: str, name: str) -> None:
        """The image and its snapshots."""
        with self.image(pool, name) as img:
            for snap in list(img.list_snaps()):
                img.remove_snap(snap["name"])
        with self.ioctx(pool) as io, _calling(f"volume {pool}/{name}"):
            rbd.RBD().remove(io, name)

    def volume_write(self, pool: str, name: str, offset: int, data: bytes) -> None:
        with self.image(pool, name) as img:
            img.write(data, offset)

    def volume_read(self, pool: str, name: str, offset: int, length: int) -> bytes:
        with self.image(pool, name, read_only=True) as img:
            return bytes(img.read(offset, length))

    # ------------------------------------------------------------------ snapshots
    def snapshots(self, pool: str, name: str) -> list[dict[str, Any]]:
        with self.image(pool, name, read_only=True) as img:
            return [{"name": s["name"], "size": int(s["size"]),
                     "created": img.get_snap_timestamp(s["id"]).timestamp()}
                    for s in img.list_snaps()]

    def snapshot_add(self, pool: str, name: str, snap: str) -> None:
        with self.image(pool, name) as img:
            img.create_snap(snap)

    def snapshot_rollback(self, pool: str, name: str, snap: str) -> None:
        with self.image(pool, name) as img:
            if not img.snap_exists(snap):
                raise NotFound(f"volume {pool}/{name} has no snapshot {snap!r}")
            img.rollback_to_snap(snap)

    def snapshot_remove(self, pool: str, name: str, snap: str) -> None:
        with self.image(pool, name) as img:
            if not img.snap_exists(snap):
                raise NotFound(f"volume {pool}/{name} has no snapshot {snap!r}")
            img.remove_snap(snap)

    # ------------------------------------------------------------------ locks and fencing
    def lockers(self, pool: str, name: str) -> list[Locker]:
        with self.image(pool, name, read_only=True) as img:
            return self._lockers(img)

    @staticmethod
    def _lockers(img: Any) -> list[Locker]:
        found = img.list_lockers()
        if not found:
            return []
        return [Locker(client, cookie, address) for client, cookie, address in found["lockers"]]

    def break_locks(self, pool: str, name: str) -> list[Locker]:
        """Break every lock of the image (librbd blocklists each holder as it breaks it, so
        a holder that still runs cannot write); the locks broken."""
        with self.image(pool, name) as img:
            held = self._lockers(img)
            for lk in held:
                try:
                    img.break_lock(lk.client, lk.cookie)
                except rbd.ImageNotFound:   # released meanwhile
                    pass
            return held

    def blocklist(self) -> list[str]:
        """Addresses (or address ranges) that may not talk to the OSDs."""
        return [str(e.get("addr", e)) if isinstance(e, dict) else str(e)
                for e in self.command("osd blocklist ls") or []]

    def blocklist_add(self, address: str, seconds: float = 0) -> None:
        args: dict[str, Any] = {"blocklistop": "add", "addr": address}
        if seconds:
            args["expire"] = float(seconds)
        self.command("osd blocklist", **args)

    def blocklist_remove(self, address: str) -> None:
        self.command("osd blocklist", blocklistop="rm", addr=address)


def connect(cfg: StorageConfig) -> Ceph:
    if not cfg.enabled:
        raise PvcError("storage is not enabled in this cluster's configuration "
                       "(cluster.storage.enabled)")
    return Ceph(cfg).connect()
