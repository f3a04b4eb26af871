"""libvirt domain XML: read the facts pvc needs, and adapt a definition for one node.

Pure text handling (no libvirt): the cluster stores the operator's XML as given (plus a UUID if
it had none); `for_node` produces what a particular node's hypervisor actually runs.
"""
from __future__ import annotations

import math
import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import defusedxml.ElementTree as defused
from defusedxml import DefusedXmlException

from pvc.core import names
from pvc.core.errors import InvalidInput

_UNITS_TO_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
                 "m": 1024, "mib": 1024, "mb": 1000 * 1000 / 1024, "g": 1024 ** 2,
                 "gib": 1024 ** 2, "gb": 1000 ** 3 / 1024, "t": 1024 ** 3, "tib": 1024 ** 3}
MAX_XML_BYTES = 256 * 1024      # it is stored in ZooKeeper, whose nodes hold 1 MiB at most
MAX_MEMORY_MIB = 16 * 1024 ** 3  # 16 PiB: more than any machine; a typo, not a VM
MAX_VCPUS = 4096                 # libvirt's and QEMU's ceiling


def decode(raw: bytes) -> str:
    """A definition file's bytes as text: UTF-8, of a size ZooKeeper can hold."""
    if len(raw) > MAX_XML_BYTES:
        raise InvalidInput(f"domain XML is {_size(len(raw))}; the limit is "
                           f"{_size(MAX_XML_BYTES)} (VM definitions are kept in ZooKeeper)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"domain XML is not UTF-8 text (byte {e.start} is "
                           f"{raw[e.start:e.start + 1]!r})") from None


def _size(n: int) -> str:
    return f"{n / 1024 ** 2:.1f} MiB" if n >= 1024 ** 2 else f"{n // 1024} KiB"





@dataclass(frozen=True)
class DomainFacts:
    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    console_log: str | None  # the serial <log file=…> path as written, if any
    bridges: tuple[str, ...] = ()   # the bridges its interfaces are on


def parse(xml: str, uuid_if_missing: str = "") -> tuple[DomainFacts, str]:
    """Validate a domain definition; return its facts and the XML to store (a UUID added
    when it has none: uuid_if_missing, else a new one)."""
    root = _root(xml)
    name = (root.findtext("name") or "").strip()
    if not name:
        raise InvalidInput("domain XML has no <name>")
    if not names.valid_name(name):
        raise InvalidInput(f"domain name {name!r} must be 1-63 letters, digits, '.', '_' or '-'")
    if looks_like_uuid(name):
        raise InvalidInput(f"domain name {name!r} looks like a UUID; VMs are found by either")
    uuid = (root.findtext("uuid") or "").strip()
    if uuid:
        try:
            uuid = str(uuidlib.UUID(uuid))
        except ValueError:
            raise InvalidInput(f"domain XML has an invalid <uuid>: {uuid!r}") from None
    else:
        uuid = uuid_if_missing or str(uuidlib.uuid4())
        el = ET.Element("uuid")
        el.text = uuid
        root.insert(1, el)
        xml = ET.tostring(root, encoding="unicode")
    facts = DomainFacts(name=name, uuid=uuid, memory_mib=_memory_mib(root),
                        vcpus=_vcpus(root), console_log=_console_log(root),
                        bridges=_bridges(root))
    return facts, xml


def _bridges(root: ET.Element) -> tuple[str, ...]:
    found = []
    for iface in root.findall("devices/interface"):
        if iface.get("type") != "bridge":
            continue
        source = iface.find("source")
        bridge = (source.get("bridge") or "").strip() if source is not None else ""
        if not bridge:
            raise InvalidInput("domain XML: an <interface type='bridge'> has no "
                               "<source bridge='…'/>")
        if not names.valid_name(bridge) or len(bridge) > 15:
            raise InvalidInput(f"domain XML: bridge {bridge!r} is not an interface name")
        found.append(bridge)
    return tuple(dict.fromkeys(found))


def looks_like_uuid(name: str) -> bool:
    try:
        uuidlib.UUID(name)
        return len(name) in (32, 36)
    except ValueError:
        return False


def facts(xml: str) -> DomainFacts:
    return parse(xml)[0]


def root(xml: str) -> ET.Element:
    """The parsed <domain> (validated: size, well-formed, no entities)."""
    return _root(xml)


def _root(xml: str) -> ET.Element:
    if len(xml.encode("utf-8", "surrogatepass")) > MAX_XML_BYTES:
        decode(xml.encode("utf-8", "surrogatepass"))    # says how large, and the limit
    try:
        root = defused.fromstring(xml)
    except ET.ParseError as e:
        raise InvalidInput(f"malformed domain XML: {e}") from None
    except DefusedXmlException as e:
        raise InvalidInput(f"domain XML refused: {type(e).__name__} "
                           "(entities and DTDs are not allowed)") from None
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
    if not math.isfinite(kib) or kib <= 0:
        raise InvalidInput(f"domain XML <memory> must be a positive number, not "
                           f"{(el.text or '').strip()!r}")
    mib = max(1, int(round(kib / 1024)))
    if mib > MAX_MEMORY_MIB:
        raise InvalidInput(f"domain XML <memory> is {mib} MiB, more than any machine has "
                           f"(limit {MAX_MEMORY_MIB} MiB)")
    return mib


def _vcpus(root: ET.Element) -> int:
    text = (root.findtext("vcpu") or "1").strip()
    try:
        n = int(text)
    except ValueError:
        raise InvalidInput(f"domain XML <vcpu> is not a whole number: {text!r}") from None
    if n < 1:
        raise InvalidInput("domain XML <vcpu> must be at least 1")
    if n > MAX_VCPUS:
        raise InvalidInput(f"domain XML <vcpu> is {n}; at most {MAX_VCPUS}")
    return n


def _console_log(root: ET.Element) -> str | None:
    for serial in root.findall("devices/serial"):
        log = serial.find("log")
        if log is not None and log.get("file"):
            return log.get("file")
    return None


def renamed(xml: str, name: str) -> str:
    """The definition with another <name>."""
    root = _root(xml)
    el = root.find("name")
    if el is None:
        raise InvalidInput("domain XML has no <name>")
    el.text = name
    return ET.tostring(root, encoding="unicode")


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
