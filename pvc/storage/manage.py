"""What `pvc storage` does: Ceph's state as an operator reads it, and pools, volumes and
snapshots changed with the refusals that keep VMs' disks safe (a disk in use is neither
removed, renamed nor rolled back; a pool with volumes goes only when asked twice)."""
from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from pvc.core.config import StorageConfig
from pvc.core.errors import Conflict, InvalidInput, NotFound, PvcError, Unavailable
from pvc.core.models import VM

if TYPE_CHECKING:   # the bindings load when a command connects, not for its --help
    from pvc.storage.ceph import Ceph

T = TypeVar("T")
UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
# flags every Pacific cluster has set: not the operator's (noout, norebalance, …)
STANDING_FLAGS = {"pglog_hardlimit", "purged_snapdirs", "recovery_deletes", "sortbitwise"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def parse_size(text: str) -> int:
    """Bytes from '10G', '512M', '1.5T', '4096' (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([BKMGT]?)(?:I?B)?\s*", text.upper())
    if not m or float(m.group(1)) <= 0:
        raise InvalidInput(f"size {text!r}: expected a positive number with an optional unit "
                           "(K, M, G, T), e.g. 10G")
    return int(float(m.group(1)) * UNITS[m.group(2)])


def size_text(n: int) -> str:
    """1073741824 → '1G', 1610612736 → '1.5G'."""
    for unit in ("T", "G", "M", "K"):
        if n >= UNITS[unit]:
            return f"{n / UNITS[unit]:.1f}".removesuffix(".0") + unit
    return f"{n}B"


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name):
        raise InvalidInput(f"{kind} name {name!r} must be 1-63 letters, digits, '.', '_' or "
                           "'-', starting with a letter or digit")
    return name


def split_volume(ref: str) -> tuple[str, str]:
    pool, _, volume = ref.partition("/")
    if not volume:
        raise InvalidInput(f"volume {ref!r}: expected POOL/VOLUME")
    return check_name("pool", pool), check_name("volume", volume)


# ------------------------------------------------------------------------------ who uses what

def users(vms: Iterable[VM]) -> dict[str, str]:
    """POOL/VOLUME → the VM whose disk it is."""
    return {volume: vm.name for vm in vms for volume in vm.volumes}


def refuse_in_use(vms: Iterable[VM], pool: str, volume: str, doing: str) -> None:
    user = users(vms).get(f"{pool}/{volume}")
    if user:
        raise Conflict(f"volume {pool}/{volume} is a disk of VM {user}: it cannot be {doing}")


# ------------------------------------------------------------------------------ cluster

def status(ceph: Ceph) -> dict[str, Any]:
    st = ceph.status()
    health = ceph.health()
    osdmap = st.get("osdmap", {})
    pgmap = st.get("pgmap", {})
    flags = [f for f in ceph.osd_dump().get("flags_set", []) if f not in STANDING_FLAGS]
    return {
        "health": health.get("status", "UNKNOWN"),
        "checks": {name: check.get("summary", {}).get("message", "")
                   for name, check in health.get("checks", {}).items()},
        "monitors": {"quorum": st.get("quorum_names", []),
                     "total": len(st.get("monmap", {}).get("mons", []))
                     or st.get("monmap", {}).get("num_mons", 0)},
        "osds": {"total": osdmap.get("num_osds", 0), "up": osdmap.get("num_up_osds", 0),
                 "in": osdmap.get("num_in_osds", 0)},
        "flags": flags,
        "host_flags": ceph.host_flags(),    # e.g. {"hv1": ["noout"]} while hv1 is flushed
        "pgs": {s["state_name"]: s["count"] for s in pgmap.get("pgs_by_state", [])},
        "usage": {"total": pgmap.get("bytes_total", 0), "used": pgmap.get("bytes_used", 0),
                  "available": pgmap.get("bytes_avail", 0)},
    }


def osds(ceph: Ceph) -> list[dict[str, Any]]:
    tree = ceph.osd_tree()
    host_of = {child: n["name"] for n in tree if n["type"] == "host"
               for child in n.get("children", [])}
    usage = {n["id"]: n for n in ceph.osd_df()}
    rows = []
    for n in sorted((n for n in tree if n["type"] == "osd"), key=lambda n: n["id"]):
        df = usage.get(n["id"], {})
        rows.append({"id": n["id"], "name": n["name"], "node": host_of.get(n["id"], ""),
                     "up": n.get("status") == "up", "in": n.get("reweight", 0) > 0,
                     "size": int(df.get("kb", 0)) * 1024,
                     "used": int(df.get("kb_used", 0)) * 1024,
                     "utilization": round(float(df.get("utilization", 0.0)), 1),
                     "pgs": df.get("pgs", 0)})
    return rows


# ------------------------------------------------------------------------------ pools

def pools(ceph: Ceph) -> list[dict[str, Any]]:
    df = {p["name"]: p["stats"] for p in ceph.df().get("pools", [])}
    details = {p["pool_name"]: p for p in ceph.osd_dump().get("pools", [])}
    rows = []
    for name in sorted(ceph.pool_names()):
        stats, detail = df.get(name, {}), details.get(name, {})
        rows.append({"name": name, "replicas": detail.get("size", 0),
                     "min_replicas": detail.get("min_size", 0),
                     "pgs": detail.get("pg_num", 0),
                     "applications": sorted(detail.get("application_metadata", {})),
                     "stored": stats.get("stored", 0), "objects": stats.get("objects", 0),
                     "max_available": stats.get("max_avail", 0)})
    return rows


def pool_add(ceph: Ceph, name: str, pgs: int, replicas: int) -> None:
    check_name("pool", name)
    if ceph.pool_exists(name):
        raise Conflict(f"pool {name} already exists")
    if not 1 <= replicas <= 10 or pgs < 1 or pgs & (pgs - 1):
        raise InvalidInput("replicas must be 1-10 and placement groups a power of two")
    ceph.pool_add(name, pgs, replicas)


def pool_remove(ceph: Ceph, vms: Iterable[VM], name: str, force: bool) -> list[str]:
    """Remove a pool; the volumes it held. One with volumes goes only with force, and never
    while a VM's disk is in it."""
    if not ceph.pool_exists(name):
        raise NotFound(f"no pool {name}")
    used = sorted(f"{v} ({vm})" for v, vm in users(vms).items() if v.split("/")[0] == name)
    if used:
        raise Conflict(f"pool {name} holds disks of VMs: {', '.join(used)}")
    volumes = ceph.volumes(name)
    if volumes and not force:
        raise Conflict(f"pool {name} holds {len(volumes)} volumes ({', '.join(volumes[:5])}"
                       f"{', …' if len(volumes) > 5 else ''}): --force removes them with it")
    ceph.pool_remove(name)
    return volumes


# ------------------------------------------------------------------------------ volumes

def volumes(ceph: Ceph, vms: Iterable[VM], pool: str = "") -> list[dict[str, Any]]:
    used = users(vms)
    rows = []
    for p in [pool] if pool else sorted(ceph.pool_names()):
        if pool and not ceph.pool_exists(pool):
            raise NotFound(f"no pool {pool}")
        for v in ceph.volumes(p):
            info = ceph.volume_info(p, v)
            rows.append({**info, "vm": used.get(f"{p}/{v}", "")})
    return rows


def volume_info(ceph: Ceph, vms: Iterable[VM], pool: str, name: str) -> dict[str, Any]:
    return {**ceph.volume_info(pool, name), "vm": users(vms).get(f"{pool}/{name}", "")}


def volume_add(ceph: Ceph, pool: str, name: str, size: int) -> None:
    if ceph.volume_exists(pool, name):
        raise Conflict(f"volume {pool}/{name} already exists")
    ceph.volume_add(pool, name, size)


def volume_resize(ceph: Ceph, vms: Iterable[VM], pool: str, name: str, size: int,
                  shrink: bool) -> int:
    """The new size; a smaller one only with shrink, and never under a VM."""
    current = int(ceph.volume_info(pool, name)["size"])
    if size < current:
        if not shrink:
            raise Conflict(f"{size_text(size)} is smaller than volume {pool}/{name} "
                           f"({size_text(current)}): --shrink cuts its end off")
        refuse_in_use(vms, pool, name, "shrunk")
    ceph.volume_resize(pool, name, size)
    return size


def volume_clone(ceph: Ceph, pool: str, name: str, new: str) -> tuple[str, str]:
    """A full, independent copy (into POOL/NEW or, without a pool, beside the original)."""
    to_pool, to_name = split_volume(new) if "/" in new else (pool, check_name("volume", new))
    if ceph.volume_exists(to_pool, to_name):
        raise Conflict(f"volume {to_pool}/{to_name} already exists")
    ceph.volume_copy(pool, name, to_pool, to_name)
    return to_pool, to_name


def volume_rename(ceph: Ceph, vms: Iterable[VM], pool: str, name: str, new: str) -> None:
    check_name("volume", new)
    refuse_in_use(vms, pool, name, "renamed (its VM names it)")
    if ceph.volume_exists(pool, new):
        raise Conflict(f"volume {pool}/{new} already exists")
    ceph.volume_rename(pool, name, new)


def volume_remove(ceph: Ceph, vms: Iterable[VM], pool: str, name: str) -> None:
    refuse_in_use(vms, pool, name, "removed")
    ceph.volume_remove(pool, name)


# ------------------------------------------------------------------------------ snapshots

def snapshot_add(ceph: Ceph, pool: str, name: str, snap: str) -> None:
    check_name("snapshot", snap)
    if any(s["name"] == snap for s in ceph.snapshots(pool, name)):
        raise Conflict(f"volume {pool}/{name} already has a snapshot {snap!r}")
    ceph.snapshot_add(pool, name, snap)


def snapshot_rollback(ceph: Ceph, vms: Iterable[VM], pool: str, name: str, snap: str) -> None:
    refuse_in_use(vms, pool, name, "rolled back (stop and undefine its VM, or use a clone)")
    ceph.snapshot_rollback(pool, name, snap)


# ------------------------------------------------------------------------------ fencing

def cut_off(ceph: Ceph, node: str, host: str, volumes: Iterable[str]) -> list[str]:
    """One writer, always. The fenced node's OSDs are marked down at once (its BMC said
    off: Ceph need not wait out its heartbeats, and I/O to what they served moves to the
    other replicas now); then every client at host (its address) that has one of volumes
    open or locked is blocklisted (the OSDs refuse its writes from now on, if it was not
    really off), and its locks broken so that the disks open elsewhere at once. The
    addresses blocklisted."""
    mark_down(ceph, node)
    cut: list[str] = []
    deadline = time.monotonic() + CUT_OFF_PATIENCE
    for ref in volumes:
        pool, name = ref.split("/", 1)
        try:
            info = _patiently(lambda: ceph.volume_info(pool, name), deadline)
        except NotFound:
            continue
        lockers = ceph.lockers(pool, name)
        clients = set(info["watchers"]) | {lk.address for lk in lockers}
        for address in sorted(a for a in clients if _host(a) == host and a not in cut):
            ceph.blocklist_add(address)
            cut.append(address)
        if any(_host(lk.address) == host for lk in lockers):
            ceph.break_locks(pool, name)
    return cut


# How long a fence waits for the placement groups the fenced node's OSDs served: once they
# are marked down, the others serve after the old primaries' read leases run out (Ceph's
# osd_heartbeat_grace × osd_pool_default_read_lease_ratio: 16 s by default).
CUT_OFF_PATIENCE = 60.0


def _patiently(call: Callable[[], T], deadline: float) -> T:
    """call(), again while Ceph does not answer in time, until the deadline."""
    while True:
        try:
            return call()
        except Unavailable:
            if time.monotonic() > deadline:
                raise


def mark_down(ceph: Ceph, node: str) -> list[int]:
    """The OSDs of CRUSH host `node` that Ceph still counts up, marked down; their ids."""
    tree = ceph.osd_tree()
    ids = [child for n in tree if n["type"] == "host" and n["name"] == node
           for child in n.get("children", [])]
    up = [n["id"] for n in tree if n["id"] in ids and n.get("status") == "up"]
    if up:
        ceph.command("osd down", ids=[str(i) for i in up])
    return up


def lift(ceph: Ceph, addresses: Iterable[str]) -> None:
    """The blocklist entries of a fenced node that came back (its new clients have other
    addresses anyway: this keeps the list short)."""
    listed = set(ceph.blocklist())
    for address in addresses:
        if address in listed:
            ceph.blocklist_remove(address)


def _host(address: str) -> str:
    """10.0.0.1:0/1234 → 10.0.0.1 (a client's address: ip:port/nonce)."""
    return address.split("/", 1)[0].rsplit(":", 1)[0]


# ------------------------------------------------------------------------------ health

def problems(ceph: Ceph, flushed: set[str]) -> list[str]:
    """Why storage degrades the cluster: each of Ceph's health checks by name, and noout on
    a node that is not flushed. noout on a flushed node is the flush's (its OSD_FLAGS check
    too)."""
    health = ceph.health()
    noout = {h for h, flags in ceph.host_flags().items() if "noout" in flags}
    out = []
    for name, check in health.get("checks", {}).items():
        if name == "OSD_FLAGS" and noout and noout <= flushed and not _other_flags(check):
            continue
        out.append(f"storage: {name}: {check.get('summary', {}).get('message', '')}")
    out += [f"storage: noout is set on {h}, which is not flushed (pvc node unflush {h}, or "
            f"ceph osd unset-group noout {h})" for h in sorted(noout - flushed)]
    return out


def _other_flags(check: dict[str, Any]) -> bool:
    """Does an OSD_FLAGS check name anything but hosts with noout?"""
    return any(not re.fullmatch(r"host \S+ has flags noout", d.get("message", ""))
               for d in check.get("detail", []))


def report(cfg: StorageConfig, flushed: set[str]) -> dict[str, Any]:
    """Storage for `cluster status`: health, OSDs, usage and the problems ({} without
    storage; a Ceph that does not answer is itself the problem)."""
    if not cfg.enabled:
        return {}
    from pvc.storage.ceph import connect
    try:
        with connect(cfg) as ceph:
            st = status(ceph)
            return {"health": st["health"], "osds": st["osds"], "usage": st["usage"],
                    "flags": st["flags"], "problems": problems(ceph, flushed)}
    except PvcError as e:
        return {"health": "UNKNOWN", "problems": [f"storage: {e}"]}
