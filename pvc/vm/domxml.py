"""libvirt domain XML: read the facts pvc needs, and adapt a definition for one node.

Pure text handling (no libvirt): the cluster stores the operator's XML as given (plus a UUID if
it had none); `for_node` produces what a particular node's hypervisor actually runs.
"""
from __future__ import annotations

import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from pvc.core.errors import InvalidInput

_UNITS_TO_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
                 "m": 1024, "mib": 1024, "mb": 1000 * 1000 / 1024, "g": 1024 ** 2,
                 "gib": 1024 ** 2, "gb": 1000 ** 3 / 1024, "t": 1024 ** 3, "tib": 1024 ** 3}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class DomainFacts:
    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    console_log: str | None  # the serial <log file=…> path as written, if any


def parse(xml: str) -> tuple[DomainFacts, str]:
    """Validate a domain definition; return its facts and the XML to store (UUID added)."""
    root = _root(xml)
    name = (root.findtext("name") or "").strip()
    if not name:
        raise InvalidInput("domain XML has no <name>")
    if not _NAME_RE.match(name):
        raise InvalidInput(f"domain name {name!r} must be 1-63 letters, digits, '.', '_' or '-'")
    if _looks_like_uuid(name):
        raise InvalidInput(f"domain name {name!r} looks like a UUID; VMs are found by either")
    uuid = (root.findtext("uuid") or "").strip()
    if uuid:
        try:
            uuid = str(uuidlib.UUID(uuid))
        except ValueError:
            raise InvalidInput(f"domain XML has an invalid <uuid>: {uuid!r}") from None
    else:
        uuid = str(uuidlib.uuid4())
        el = ET.Element("uuid")
        el.text = uuid
        root.insert(1, el)
        xml = ET.tostring(root, encoding="unicode")
    facts = DomainFacts(name=name, uuid=uuid, memory_mib=_memory_mib(root),
                        vcpus=_vcpus(root), console_log=_console_log(root))
    return facts, xml


def _looks_like_uuid(name: str) -> bool:
    try:
        uuidlib.UUID(name)
        return len(name) in (32, 36)
    except ValueError:
        return False


def facts(xml: str) -> DomainFacts:
    return parse(xml)[0]


def _root(xml: str) -> ET.Element:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InvalidInput(f"malformed domain XML: {e}") from None
    if root.tag != "domain":
        raise InvalidInput(f"not a libvirt domain definition: root element is <{root.tag}>")
    return root


def _memory_mib(root: ET.Element) -> int:
    el = root.find("memory")
    if el is None or not (el.text or "").strip():
        raise InvalidInput("domain XML has no <memory>")
    unit = el.get("unit", "KiB").lower()
    if unit not in _UNITS_TO_KIB:
        raise InvalidInput(f"domain XML <memory> has an unknown unit {unit!r}")
    try:
        kib = float((el.text or '').strip()) * _UNITS_TO_KIB[unit]
    except ValueError:
        raise InvalidInput(f"domain XML <memory> is not a number: {el.text!r}") from None
    if kib <= 0:
        raise InvalidInput("domain XML <memory> must be positive")
    return max(1, int(round(kib / 1024)))


def _vcpus(root: ET.Element) -> int:
    text = (root.findtext("vcpu") or "1").strip()
    try:
        n = int(text)
    except ValueError:
        raise InvalidInput(f"domain XML <vcpu> is not a whole number: {text!r}") from None
    if n < 1:
        raise InvalidInput("domain XML <vcpu> must be at least 1")
    return n


def _console_log(root: ET.Element) -> str | None:
    for serial in root.findall("devices/serial"):
        log = serial.find("log")
        if log is not None and log.get("file"):
            return log.get("file")
    return None


def for_node(xml: str, domain_type: str = "", console_log_directory: str = "") -> str:
    """The XML a node runs: its forced <domain type>, and serial logs in its log directory
    (named after the VM, so the node's tailer knows where to look)."""
    root = _root(xml)
    if domain_type:
        root.set("type", domain_type)
        if domain_type == "test":
            _strip_for_test_driver(root)
    if console_log_directory:
        name = root.findtext("name") or "vm"
        for serial in root.findall("devices/serial"):
            log = serial.find("log")
            if log is not None and log.get("file"):
                log.set("file", str(Path(console_log_directory) / f"{name}.log"))
    return ET.tostring(root, encoding="unicode")


def console_log_path(name: str, console_log_directory: str) -> Path:
    return Path(console_log_directory) / f"{name}.log"


def _strip_for_test_driver(root: ET.Element) -> None:
    """libvirt's test driver has no emulator or devices to speak of; keep what it accepts."""
    devices = root.find("devices")
    if devices is not None:
        root.remove(devices)
    os_el = root.find("os")
    if os_el is not None:
        for tag in ("kernel", "initrd", "cmdline", "loader", "nvram"):
            for el in os_el.findall(tag):
                os_el.remove(el)
        type_el = os_el.find("type")
        if type_el is not None:
            type_el.attrib.pop("machine", None)
            type_el.attrib.pop("arch", None)
