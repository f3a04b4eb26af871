"""A VM's disks on Ceph RBD: found in its XML, checked against Ceph at define and modify, and
completed with what every node needs to open them (the monitors, and the cephx user with the
libvirt secret each node's daemon defines). An operator writes only

    <disk type='network' device='disk'>
      <source protocol='rbd' name='POOL/VOLUME'/>
      <target dev='vda' bus='virtio'/>
    </disk>
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Iterable

from pvc.core.config import StorageConfig
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.models import VM
from pvc.vm import domxml

if TYPE_CHECKING:
    from pvc.storage.ceph import Ceph

RBD_SOURCES = "devices/disk[@type='network']/source[@protocol='rbd']"


def volumes_of(xml: str) -> list[str]:
    """POOL/VOLUME of each RBD disk, in the XML's order."""
    found = []
    for source in domxml.root(xml).findall(RBD_SOURCES):
        name = (source.get("name") or "").strip()
        pool, _, volume = name.partition("/")
        if not pool or not volume or "/" in volume or "@" in volume:
            raise InvalidInput(f"domain XML: an RBD disk names {name!r}; expected "
                               "name='POOL/VOLUME'")
        found.append(name)
    if len(set(found)) != len(found):
        raise InvalidInput("domain XML: one volume is attached twice")
    return found


def require_volumes(ceph: "Ceph", volumes: Iterable[str]) -> None:
    missing = [v for v in volumes if not ceph.volume_exists(*v.split("/", 1))]
    if missing:
        raise NotFound(f"volume {', '.join(missing)} does not exist (pvc storage volume add "
                       "POOL/VOLUME SIZE)")


def complete(xml: str, cfg: StorageConfig, monitors: list[tuple[str, int]]) -> str:
    """Every RBD disk with the monitors and the cephx secret (where the XML names none)."""
    root = domxml.root(xml)
    sources = root.findall(RBD_SOURCES)
    if not sources:
        return xml
    for disk in root.findall("devices/disk[@type='network']"):
        source = disk.find("source[@protocol='rbd']")
        if source is None:
            continue
        if source.find("host") is None:
            for host, port in monitors:
                ET.SubElement(source, "host", name=host, port=str(port))
        if disk.find("auth") is None:
            auth = ET.Element("auth", username=cfg.libvirt_user)
            ET.SubElement(auth, "secret", type="ceph", uuid=cfg.libvirt_secret_uuid)
            disk.insert(list(disk).index(source) + 1, auth)
    return ET.tostring(root, encoding="unicode")


def prepare(xml: str, cfg: StorageConfig) -> tuple[str, list[str]]:
    """(XML to store, its volumes): volumes checked to exist and the disks completed. A VM
    without RBD disks needs no Ceph."""
    from pvc.storage import ceph
    volumes = volumes_of(xml)
    if not volumes:
        return xml, []
    if not cfg.enabled:
        raise InvalidInput("the VM has RBD disks but this cluster has no storage "
                           "(cluster.storage.enabled is false)")
    with ceph.connect(cfg) as c:
        require_volumes(c, volumes)
        return complete(xml, cfg, c.monitors()), volumes


def users(vms: Iterable[VM]) -> dict[str, str]:
    """POOL/VOLUME → the VM whose disk it is."""
    return {volume: vm.name for vm in vms for volume in vm.volumes}


def refuse_in_use(vms: Iterable[VM], volume: str, doing: str) -> None:
    user = users(vms).get(volume)
    if user:
        raise Conflict(f"volume {volume} is a disk of VM {user}: it cannot be {doing}")


def refuse_pool_in_use(vms: Iterable[VM], pool: str) -> None:
    used = sorted(f"{v} ({vm})" for v, vm in users(vms).items() if v.split("/")[0] == pool)
    if used:
        raise Conflict(f"pool {pool} holds disks of VMs: {', '.join(used)}")
