from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pvc.core.errors import InvalidInput
from pvc.vm import domxml

KVM = """<domain type='kvm'>
  <name>web1</name>
  <memory unit='GiB'>2</memory>
  <vcpu>4</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>/k</kernel></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='pty'><log file='/var/log/libvirt/web1.log' append='off'/></serial>
  </devices>
</domain>"""


def test_parse_reads_facts_and_adds_a_uuid() -> None:
    facts, stored = domxml.parse(KVM)
    assert (facts.name, facts.memory_mib, facts.vcpus) == ("web1", 2048, 4)
    assert facts.console_log == "/var/log/libvirt/web1.log"
    assert ET.fromstring(stored).findtext("uuid") == facts.uuid


def test_parse_keeps_a_given_uuid_and_kib_default() -> None:
    xml = ("<domain type='kvm'><name>a</name><uuid>6695EB01-F6A4-8304-79AA-97F2502E193F</uuid>"
           "<memory>524288</memory></domain>")
    facts, _ = domxml.parse(xml)
    assert facts.uuid == "6695eb01-f6a4-8304-79aa-97f2502e193f"
    assert facts.memory_mib == 512 and facts.vcpus == 1 and facts.console_log is None


@pytest.mark.parametrize("xml, message", [
    ("<domain><name>x</name>", "malformed domain XML"),
    ("<network><name>x</name></network>", "root element is <network>"),
    ("<domain><memory>1</memory></domain>", "no <name>"),
    ("<domain><name>bad name</name><memory>1</memory></domain>", "must be 1-63"),
    ("<domain><name>x</name></domain>", "no <memory>"),
    ("<domain><name>x</name><memory unit='parsecs'>1</memory></domain>", "unknown unit"),
    ("<domain><name>x</name><memory>lots</memory></domain>", "not a number"),
    ("<domain><name>x</name><memory>1024</memory><vcpu>0</vcpu></domain>", "at least 1"),
    ("<domain><name>x</name><uuid>nope</uuid><memory>1024</memory></domain>", "invalid <uuid>"),
])
def test_bad_xml_is_a_clear_error(xml: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        domxml.parse(xml)


def test_for_node_forces_type_and_moves_the_console_log() -> None:
    out = ET.fromstring(domxml.for_node(KVM, "qemu", "/srv/console"))
    assert out.get("type") == "qemu"
    assert out.find("devices/serial/log").get("file") == "/srv/console/web1.log"
    assert out.find("devices/emulator") is not None


def test_for_node_test_driver_strips_devices() -> None:
    out = ET.fromstring(domxml.for_node(KVM, "test", ""))
    assert out.get("type") == "test"
    assert out.find("devices") is None and out.find("os/kernel") is None
