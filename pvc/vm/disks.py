"""A VM's disks on Ceph RBD: found in its XML, checked against Ceph at define and modify, and
completed with what every node needs to open them (the monitors, and the cephx user with the
libvirt secret each node's daemon defines). An operator writes only

    <disk type='network' device='disk'>
      <source protocol='rbd' name='POOL/VOLUME'/>
      <target dev='vda' bus='virtio'/>
    </disk>
"""
from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from pvc.core.config import StorageConfig
from pvc.core.errors import ConfigError, InvalidInput, NotFound
from pvc.hypervisor.base import Hypervisor
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
    volumes = volumes_of(xml)
    if not volumes:
        return xml, []
    if not cfg.enabled:
        raise InvalidInput("the VM has RBD disks but this cluster has no storage "
                           "(cluster.storage.enabled is false)")
    with connect(cfg) as c:
        require_volumes(c, volumes)
        return complete(xml, cfg, c.monitors()), volumes


def connect(cfg: StorageConfig) -> "Ceph":
    from pvc.storage import ceph
    return ceph.connect(cfg)


def give_key_to_hypervisor(hv: Hypervisor, cfg: StorageConfig) -> None:
    """The libvirt secret every RBD disk's <auth> names: the cephx key of the user QEMU
    opens disks as, from a file only root reads."""
    if not cfg.enabled:
        return
    key = Path(cfg.libvirt_key_file).read_text().strip()
    try:
        value = base64.b64decode(key, validate=True)
    except binascii.Error:
        raise ConfigError(f"{cfg.libvirt_key_file}: not a cephx key (base64)") from None
    hv.define_secret(cfg.libvirt_secret_uuid, f"client.{cfg.libvirt_user} secret", value)
