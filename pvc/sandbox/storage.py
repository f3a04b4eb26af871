"""Ceph in the sandbox, bootstrapped by hand as Ceph's own vstart.sh does (no cephadm, no
systemd): a monitor and a manager on each coordinator, a bluestore OSD on each node (on a
sparse file of its own), cephx on, and a pool for VM disks with a replica on each of three
nodes (it serves with one node gone). Every daemon runs in its node's namespace on its
cluster address, supervised like everything else there, so a node's faults hit its Ceph too.

Production runs Ceph as its operator installed it; pvc only needs what `StorageConfig` names
(ceph.conf, a key for pvc, a key for libvirt, the pool)."""
from __future__ import annotations

import json
import re
import subprocess
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pvc.core.config import StorageConfig
from pvc.network import ip
from pvc.sandbox import procs
from pvc.sandbox.services import ProcessSpec, write_private
from pvc.storage import ceph

MON_V2, MON_V1 = 3300, 6789
POOL = "vms"
OSD_BYTES = 4 * 1024 ** 3       # sparse: costs what is written
PGS = 32
PVC_CAPS = ("mon", "allow *", "osd", "allow *", "mgr", "allow *")
LIBVIRT_CAPS = ("mon", "profile rbd", "osd", "profile rbd", "mgr", "profile rbd")
MGR_CAPS = ("mon", "allow profile mgr", "osd", "allow *", "mds", "allow *")
TIMEOUT = 90.0


@dataclass(frozen=True)
class CephLayout:
    """Where one sandbox's Ceph lives: mons (node → address) and OSDs (node → address; the
    OSD's id is its place in that order)."""
    dir: Path
    mons: dict[str, str]
    osds: dict[str, str]

    @property
    def conf(self) -> Path:
        return self.dir / "ceph.conf"

    def keyring(self, entity: str) -> Path:
        return self.dir / f"ceph.{entity}.keyring"

    @property
    def libvirt_key(self) -> Path:
        return self.dir / "libvirt.key"

    def osd_id(self, node: str) -> int:
        return list(self.osds).index(node)

    def storage_config(self, secret_uuid: str) -> StorageConfig:
        return StorageConfig(enabled=True, ceph_conf=str(self.conf), client="pvc",
                             keyring=str(self.keyring("client.pvc")), pool=POOL,
                             libvirt_user="libvirt", libvirt_key_file=str(self.libvirt_key),
                             libvirt_secret_uuid=secret_uuid, timeout=10.0)


def _mon_addrs(address: str) -> str:
    return f"[v2:{address}:{MON_V2},v1:{address}:{MON_V1}]"


def write_conf(layout: CephLayout, fsid: str) -> None:
    d = layout.dir
    replicas = min(3, len(layout.osds))
    layout.conf.write_text(f"""[global]
fsid = {fsid}
mon host = {",".join(_mon_addrs(a) for a in layout.mons.values())}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {d}/$cluster.$name.keyring
run dir = {d}/run
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
crash dir = {d}/crash
osd pool default size = {replicas}
osd pool default min size = {max(replicas - 1, 1)}
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 1
mon allow pool delete = true
# the machine's disk is shared with everything else: no MON_DISK_LOW at 30 % free
mon data avail warn = 5
mon data avail crit = 2
# a down OSD is marked out (its data copied elsewhere) after 60 s, not 10 min
mon osd down out interval = 60
# after an OSD is marked down, its placement groups serve again once its read leases end:
# 20 s × 0.25 = 5 s here (Ceph's default ratio 0.8: 16 s)
osd pool default read lease ratio = 0.25
# restful and iostat only: no module that needs more than Debian's ceph-mgr
mgr initial modules = iostat
ms bind ipv6 = false

[client]
# one admin socket per client process (QEMU, pvc): a shared name fails with "File exists"
admin socket = {d}/run/$name.$pid.asok

[mon]
mon data = {d}/mon.$id
keyring = {d}/mon.$id/keyring
mon cluster log file = {d}/log/cluster.$id.log
admin socket = {d}/run/$name.asok

[mgr]
mgr data = {d}/mgr.$id
keyring = {d}/mgr.$id/keyring
admin socket = {d}/run/$name.asok

[osd]
osd data = {d}/osd.$id
keyring = {d}/osd.$id/keyring
admin socket = {d}/run/$name.asok
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {OSD_BYTES}
# 896 MiB is the least osd_memory_target takes: keep the caches small by hand instead
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 67108864
""")


def _run(cmd: list[str], layout: CephLayout, stdin: str | None = None) -> str:
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TIMEOUT,
                         env={"CEPH_CONF": str(layout.conf), "PATH": "/usr/sbin:/usr/bin"})
    if res.returncode != 0:
        raise procs.StartFailed(f"{' '.join(cmd[:3])}: {res.stderr.strip()[-400:]}")
    return res.stdout


def _key(layout: CephLayout, entity: str, caps: tuple[str, ...], into: Path) -> None:
    caps_args = [a for i in range(0, len(caps), 2) for a in ("--cap", caps[i], caps[i + 1])]
    _run(["ceph-authtool", "--create-keyring", str(into), "--gen-key", "-n", entity,
          *caps_args], layout)
    into.chmod(0o600)


def bootstrap(layout: CephLayout) -> None:
    """Everything the daemons need before the first starts: configuration, keys (mon., admin,
    pvc, libvirt, each manager's), the monitor map and each monitor's store."""
    for sub in ("run", "log", "crash"):
        (layout.dir / sub).mkdir(parents=True, exist_ok=True)
    layout.dir.chmod(0o700)
    fsid = str(uuid.uuid4())
    write_conf(layout, fsid)
    mon_keyring = layout.dir / "mon.keyring"
    _key(layout, "mon.", ("mon", "allow *"), mon_keyring)
    entities = {"client.admin": PVC_CAPS + ("mds", "allow *"), "client.pvc": PVC_CAPS,
                "client.libvirt": LIBVIRT_CAPS}
    entities.update({f"mgr.{n}": MGR_CAPS for n in layout.mons})
    for entity, caps in entities.items():
        path = layout.keyring(entity)
        _key(layout, entity, caps, path)
        _run(["ceph-authtool", str(mon_keyring), "--import-keyring", str(path)], layout)
    for n in layout.mons:
        mgr_dir = layout.dir / f"mgr.{n}"
        mgr_dir.mkdir()
        layout.keyring(f"mgr.{n}").rename(mgr_dir / "keyring")
    key = _run(["ceph-authtool", str(layout.keyring("client.libvirt")), "-n",
                "client.libvirt", "-p"], layout).strip()
    write_private(layout.libvirt_key, key + "\n")
    monmap = layout.dir / "monmap"
    _run(["monmaptool", "--create", "--fsid", fsid, *[a for n, addr in layout.mons.items()
                                                      for a in ("--addv", n, _mon_addrs(addr))],
          str(monmap)], layout)
    for n in layout.mons:
        _run(["ceph-mon", "--mkfs", "-i", n, "--monmap", str(monmap), "--keyring",
              str(mon_keyring)], layout)


def mon_spec(layout: CephLayout, node: str, netns: str) -> ProcessSpec:
    cmd = ["ceph-mon", "-f", "-c", str(layout.conf), "-i", node,
           "--public-addr", layout.mons[node]]
    return ProcessSpec(f"ceph-mon-{node}", ip.in_netns(netns, cmd),
                       layout.dir / "log" / f"mon.{node}.out")


def mgr_spec(layout: CephLayout, node: str, netns: str) -> ProcessSpec:
    cmd = ["ceph-mgr", "-f", "-c", str(layout.conf), "-i", node,
           "--public-addr", layout.mons[node]]
    return ProcessSpec(f"ceph-mgr-{node}", ip.in_netns(netns, cmd),
                       layout.dir / "log" / f"mgr.{node}.out")


def osd_spec(layout: CephLayout, node: str, netns: str) -> ProcessSpec:
    address = layout.osds[node]
    cmd = ["ceph-osd", "-f", "-c", str(layout.conf), "-i", str(layout.osd_id(node)),
           "--public-addr", address, "--cluster-addr", address,
           "--crush-location", f"root=default host={node}"]
    return ProcessSpec(f"ceph-osd-{node}", ip.in_netns(netns, cmd),
                       layout.dir / "log" / f"osd.{node}.out")


def admin(layout: CephLayout) -> ceph.Ceph:
    cfg = StorageConfig(enabled=True, ceph_conf=str(layout.conf), client="admin",
                        keyring=str(layout.keyring("client.admin")), timeout=10.0)
    return ceph.connect(cfg)


def wait_quorum(layout: CephLayout) -> None:
    def quorum() -> bool:
        try:
            with admin(layout) as c:
                return len(c.command("quorum_status")["quorum_names"]) == len(layout.mons)
        except Exception:   # noqa: BLE001 (not yet: no monitor answers, or no quorum)
            return False
    procs.wait_until("Ceph's monitors in quorum", quorum, TIMEOUT)


def prepare_osds(layout: CephLayout) -> list["Future[None]"]:
    """Each OSD's key, id and bluestore, made in the background (mkfs takes seconds and
    needs no monitor): started before the rest of the sandbox, awaited by register_osds."""
    for node in layout.osds:
        osd = layout.osd_id(node)
        d = layout.dir / f"osd.{osd}"
        d.mkdir()
        key = _run(["ceph-authtool", "--gen-print-key"], layout).strip()
        _run(["ceph-authtool", "--create-keyring", str(d / "keyring"), "--name", f"osd.{osd}",
              "--add-key", key], layout)
        (d / "uuid").write_text(str(uuid.uuid4()))

    def mkfs(node: str) -> None:
        osd = layout.osd_id(node)
        uid = (layout.dir / f"osd.{osd}" / "uuid").read_text()
        _run(["ceph-osd", "-i", str(osd), "--mkfs", "--osd-uuid", uid, "--no-mon-config"],
             layout)
    pool = ThreadPoolExecutor(len(layout.osds))
    made = [pool.submit(mkfs, node) for node in layout.osds]
    pool.shutdown(wait=False)   # the threads end with their mkfs
    return made


def register_osds(layout: CephLayout, prepared: list["Future[None]"]) -> None:
    """Once the monitors have a quorum and the bluestores are made: each OSD's id, uuid and
    cephx key told to the monitors (`osd new`)."""
    for made in prepared:
        made.result(timeout=TIMEOUT)
    with admin(layout) as c:
        for node in layout.osds:
            osd = layout.osd_id(node)
            d = layout.dir / f"osd.{osd}"
            key = re.search(r"key = (\S+)", (d / "keyring").read_text())
            assert key is not None
            c.cluster.mon_command(json.dumps({"prefix": "osd new", "id": osd, "format": "json",
                                              "uuid": (d / "uuid").read_text()}),
                                  json.dumps({"cephx_secret": key.group(1)}).encode(),
                                  timeout=30)


def make_pool(layout: CephLayout) -> None:
    """The VM disks' pool, once every OSD is up; then until every placement group is
    active+clean (health alone says OK while they are still unknown)."""
    def osds_up() -> bool:
        with admin(layout) as c:
            return int(c.command("osd stat")["num_up_osds"]) == len(layout.osds)
    procs.wait_until("Ceph's OSDs up", osds_up, TIMEOUT)
    with admin(layout) as c:
        c.pool_add(POOL, PGS, min(3, len(layout.osds)))
    wait_clean(layout)


def wait_clean(layout: CephLayout, timeout: float = TIMEOUT) -> None:
    def clean() -> bool:
        with admin(layout) as c:
            return pgs_clean(c)
    procs.wait_until("Ceph's placement groups active+clean", clean, timeout)


def pgs_clean(c: ceph.Ceph) -> bool:
    summary = c.command("pg stat")["pg_summary"]
    states = {s["name"]: s["num"] for s in summary.get("num_pg_by_state", [])}
    return summary.get("num_pgs", 0) > 0 and states.get("active+clean") == summary["num_pgs"]
