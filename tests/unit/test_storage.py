"""The pure parts of storage: sizes and names, a VM's RBD disks in its XML, and which of Ceph's
health checks degrade the cluster (the real Ceph: tests/faults/test_storage.py)."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.core.config import StorageConfig
from pvc.core.errors import InvalidInput
from pvc.storage import manage
from pvc.vm import disks

DISK = """<domain type='kvm'><name>web</name><memory unit='MiB'>64</memory><devices>
<disk type='network' device='disk'><source protocol='rbd' name='{name}'/>
<target dev='vda' bus='virtio'/></disk>{more}</devices></domain>"""
CFG = StorageConfig(enabled=True, libvirt_user="libvirt",
                    libvirt_secret_uuid="0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f")


@pytest.mark.parametrize("text,size", [("10G", 10 * 1024 ** 3), ("512M", 512 * 1024 ** 2),
                                       ("1.5T", int(1.5 * 1024 ** 4)), ("4096", 4096),
                                       ("64MiB", 64 * 1024 ** 2), ("2k", 2048)])
def test_sizes(text: str, size: int) -> None:
    assert manage.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1G", "lots", "1X", "G"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="expected a positive number"):
        manage.parse_size(text)


@given(st.integers(min_value=1, max_value=1024 ** 5))
def test_a_size_read_back_from_its_text_is_within_a_tenth(n: int) -> None:
    assert abs(manage.parse_size(manage.size_text(n)) - n) <= n * 0.05 + 1


@pytest.mark.parametrize("ref", ["vms", "vms/", "/x", "vms/a/b", "bad pool/x", "vms/.x"])
def test_volume_references_are_pool_slash_volume(ref: str) -> None:
    with pytest.raises(InvalidInput):
        manage.split_volume(ref)


def test_a_vms_disks_are_found_and_completed() -> None:
    xml = DISK.format(name="vms/web-disk", more="")
    assert disks.volumes_of(xml) == ["vms/web-disk"]
    done = disks.complete(xml, CFG, [("10.0.0.1", 6789), ("10.0.0.2", 6789)])
    assert done.count("<host ") == 2 and "name=\"10.0.0.2\" port=\"6789\"" in done
    assert f"<secret type=\"ceph\" uuid=\"{CFG.libvirt_secret_uuid}\"" in done
    assert "<auth username=\"libvirt\">" in done
    assert disks.complete(done, CFG, [("10.9.9.9", 1)]) == done   # what it names stays
    assert disks.volumes_of(done) == ["vms/web-disk"]


@pytest.mark.parametrize("name", ["web-disk", "vms/", "vms/a@snap", "vms/a/b"])
def test_an_rbd_disk_names_pool_slash_volume(name: str) -> None:
    with pytest.raises(InvalidInput, match="expected name='POOL/VOLUME'"):
        disks.volumes_of(DISK.format(name=name, more=""))


def test_one_volume_is_not_attached_twice() -> None:
    twice = DISK.format(name="vms/a", more="<disk type='network'><source protocol='rbd' "
                                           "name='vms/a'/><target dev='vdb'/></disk>")
    with pytest.raises(InvalidInput, match="attached twice"):
        disks.volumes_of(twice)


def test_without_storage_a_vm_with_rbd_disks_is_refused() -> None:
    with pytest.raises(InvalidInput, match="this cluster has no storage"):
        disks.prepare(DISK.format(name="vms/a", more=""), StorageConfig())
    plain = "<domain><name>x</name></domain>"
    assert disks.prepare(plain, StorageConfig()) == (plain, [])


class FakeCeph:
    """What problems() reads of Ceph: its health checks and per-host flags."""

    def __init__(self, checks: dict[str, Any], host_flags: dict[str, list[str]]) -> None:
        self.checks, self.flags = checks, host_flags

    def health(self) -> dict[str, Any]:
        return {"checks": self.checks}

    def host_flags(self) -> dict[str, list[str]]:
        return self.flags


NOOUT_HV1 = {"OSD_FLAGS": {"summary": {"message": "1 OSDs or CRUSH {nodes, device-classes} "
                                                  "have {NOUP,NODOWN,NOIN,NOOUT} flags set"},
                           "detail": [{"message": "host hv1 has flags noout"}]}}


def test_noout_is_the_flushs_on_a_flushed_node_and_a_problem_elsewhere() -> None:
    ceph: Any = FakeCeph(NOOUT_HV1, {"hv1": ["noout"]})
    assert manage.problems(ceph, flushed={"hv1"}) == []
    found = manage.problems(ceph, flushed=set())
    assert found[0].startswith("storage: OSD_FLAGS: ")
    assert found[1].startswith("storage: noout is set on hv1, which is not flushed")


def test_every_other_check_is_named() -> None:
    ceph: Any = FakeCeph({"OSD_DOWN": {"summary": {"message": "1 osds down"}},
                          "MON_DOWN": {"summary": {"message": "1/3 mons down"}}}, {})
    assert manage.problems(ceph, flushed={"hv1"}) == ["storage: OSD_DOWN: 1 osds down",
                                                      "storage: MON_DOWN: 1/3 mons down"]


def test_a_client_address_names_its_host() -> None:
    assert manage._host("10.200.12.4:0/3007980329") == "10.200.12.4"
