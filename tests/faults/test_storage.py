"""Storage on a sandbox with Ceph (a monitor and a manager on each coordinator, an OSD on each
of four nodes, pool `vms` with three replicas) and QEMU guests whose disks are on it: every
`pvc storage` command against the real Ceph, the refusals that keep a disk with one writer,
and faults: an OSD killed, a monitor killed, a storage node powered off while its VMs write
their disks. Each demo guest keeps a counter on its disk (pvc.sandbox.guest): sector 0 holds
the last value N, sector 8+i the line of value i. Its data survives when, read from Ceph,
the lines 0..N are all there and in order."""
from __future__ import annotations

import re
import subprocess
from contextlib import contextmanager
from typing import Any, Iterator

import pytest

from tests.faults.conftest import Faults, kept_settled, settled_sandbox, until

pytestmark = pytest.mark.faults
OFFSET = "1400"
FENCE_WAIT = 120


@pytest.fixture(scope="module")
def storage() -> Iterator[Faults]:
    with settled_sandbox("test-storage", OFFSET, 4, nodes=4, kind="qemu",
                         storage=True) as f:
        yield f


@pytest.fixture
def st(storage: Faults) -> Iterator[Faults]:
    with kept_settled(storage) as f:
        yield f


@contextmanager
def ceph(f: Faults) -> Iterator[Any]:
    """Ceph as pvc reaches it (its own key), for reading what the guests wrote."""
    from pvc.storage.ceph import connect
    c = connect(f.config().cluster.storage)
    try:
        yield c
    finally:
        c.close()


def counter(f: Faults, vm: str) -> int:
    """The last value the guest wrote to its disk (-1: none yet)."""
    with ceph(f) as c:
        head = c.volume_read("vms", f"{vm}-disk", 0, 512).rstrip(b"\0").decode()
    m = re.match(r"pvc-counter (\d+)", head)
    return int(m.group(1)) if m else -1


def lines(f: Faults, vm: str, upto: int) -> list[int]:
    """The values on the disk's lines 0..upto, as the guest wrote them."""
    with ceph(f) as c:
        raw = c.volume_read("vms", f"{vm}-disk", 8 * 512, (upto + 1) * 512)
    found = []
    for i in range(upto + 1):
        m = re.match(rb"pvc-counter (\d+) ", raw[i * 512:(i + 1) * 512])
        found.append(int(m.group(1)) if m else -1)
    return found


def counting_on(f: Faults, vm: str, above: int) -> int:
    """Until the guest wrote a value above `above` to its disk; that value."""
    return int(until(f"{vm} writing its disk past {above}",
                     lambda: (lambda n: n if n > above else 0)(counter(f, vm)), FENCE_WAIT))


def no_gap(f: Faults, vm: str) -> int:
    """Every line 0..N of the disk is there and in order (N: the last value); N."""
    last = counter(f, vm)
    assert lines(f, vm, last) == list(range(last + 1))
    return last


def storage_status(f: Faults) -> dict[str, Any]:
    return dict(f.pvc.json("storage", "status"))


def address(f: Faults, node: str) -> str:
    return f.layout.net.node_address(f.nodes.index(node) + 1)


def home_of(f: Faults, vm: str) -> str:
    [node] = f.where()[vm]
    return node


# ------------------------------------------------------------------------------ commands

def test_status_names_every_osd_on_its_node(st: Faults) -> None:
    status = storage_status(st)
    assert status["health"] == "HEALTH_OK", status
    assert status["osds"] == {"total": 4, "up": 4, "in": 4}
    assert sorted(status["monitors"]["quorum"]) == sorted(st.coordinators)
    osds = st.pvc.json("storage", "osd", "list")
    assert sorted(o["node"] for o in osds) == sorted(st.nodes)
    assert all(o["up"] and o["in"] and o["size"] > 0 for o in osds)
    assert st.pvc.cluster_status()["storage"]["health"] == "HEALTH_OK"
    text = st.pvc("storage", "status").stdout
    assert "health:    HEALTH_OK" in text and "4/4 up, 4 in" in text


def test_volumes_and_snapshots_through_every_command(st: Faults) -> None:
    p = st.pvc
    p("storage", "volume", "add", "vms/scratch", "64M")
    assert p.json("storage", "volume", "info", "vms/scratch")["size"] == 64 * 1024 ** 2
    assert "vms/scratch" in [v["volume"] for v in p.json("storage", "volume", "list", "vms")]
    with ceph(st) as c:
        c.volume_write("vms", "scratch", 0, b"first".ljust(512, b"\0"))
    p("storage", "volume", "snapshot", "add", "vms/scratch", "before")
    assert [s["name"] for s in p.json("storage", "volume", "snapshot", "list",
                                      "vms/scratch")] == ["before"]
    with ceph(st) as c:
        c.volume_write("vms", "scratch", 0, b"second".ljust(512, b"\0"))
    p("storage", "volume", "snapshot", "rollback", "vms/scratch", "before", "--yes")
    with ceph(st) as c:
        assert c.volume_read("vms", "scratch", 0, 5) == b"first"
    p("storage", "volume", "resize", "vms/scratch", "128M")
    shrink = p("storage", "volume", "resize", "vms/scratch", "32M", ok=False)
    assert shrink.returncode == 1 and "--shrink" in shrink.stderr
    assert p.json("storage", "volume", "info", "vms/scratch")["size"] == 128 * 1024 ** 2
    p("storage", "volume", "clone", "vms/scratch", "copy")
    with ceph(st) as c:   # a copy of the data, snapshots apart
        assert c.volume_read("vms", "copy", 0, 5) == b"first"
    p("storage", "volume", "rename", "vms/copy", "copy2")
    assert p.json("storage", "volume", "info", "vms/copy2")["snapshots"] == []
    p("storage", "volume", "snapshot", "remove", "vms/scratch", "before")
    for volume in ("vms/scratch", "vms/copy2"):
        p("storage", "volume", "remove", volume, "--yes")
    names = [v["volume"] for v in p.json("storage", "volume", "list")]
    assert "vms/scratch" not in names and "vms/copy2" not in names


def test_upload_writes_an_image_into_a_volume_with_progress(st: Faults) -> None:
    p = st.pvc
    raw, qcow2 = st.layout.dir / "image.raw", st.layout.dir / "image.qcow2"
    data = bytes(range(256)) * 4096 * 12            # 12 MiB that are not zeros
    raw.write_bytes(data)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
                   check=True)
    record = p.json("storage", "volume", "upload", "vms/image", str(qcow2), "--wait")
    assert record["state"] == "succeeded", record
    assert record["progress"]["done"] == record["progress"]["total"] == 100
    assert p.json("storage", "volume", "info", "vms/image")["size"] == len(data)
    with ceph(st) as c:
        assert c.volume_read("vms", "image", 0, len(data)) == data
    again = p.json("storage", "volume", "upload", "vms/image", str(raw), "--wait")
    assert again["state"] == "succeeded" and "(raw, 12M)" in again["message"]
    missing = p("storage", "volume", "upload", "vms/image", str(st.layout.dir / "nope.img"),
                "--wait", ok=False)
    assert missing.returncode == 1 and "no such file on this node" in missing.stderr
    vm = st.vm_names()[0]
    refused = p("storage", "volume", "upload", f"vms/{vm}-disk", str(raw), ok=False)
    assert refused.returncode == 1 and f"is a disk of VM {vm}" in refused.stderr
    p("storage", "volume", "remove", "vms/image", "--yes")


def test_pools_with_volumes_go_only_when_forced(st: Faults) -> None:
    p = st.pvc
    p("storage", "pool", "add", "extra", "--replicas", "2", "--pgs", "8")
    [pool] = [x for x in p.json("storage", "pool", "list") if x["name"] == "extra"]
    assert pool["replicas"] == 2 and pool["pgs"] == 8 and "rbd" in pool["applications"]
    p("storage", "volume", "add", "extra/v1", "16M")
    refused = p("storage", "pool", "remove", "extra", "--yes", ok=False)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert "extra/v1" in [v["volume"] for v in p.json("storage", "volume", "list", "extra")]
    p("storage", "pool", "remove", "extra", "--force", "--yes")
    assert "extra" not in [x["name"] for x in p.json("storage", "pool", "list")]
    # the pool of the VMs' disks never goes, forced or not
    vms = p("storage", "pool", "remove", "vms", "--force", "--yes", ok=False)
    assert vms.returncode == 1 and "holds disks of VMs" in vms.stderr


def test_a_disk_in_use_is_neither_removed_renamed_nor_rolled_back(st: Faults) -> None:
    p, vm = st.pvc, st.vm_names()[0]
    disk = f"vms/{vm}-disk"
    p("storage", "volume", "snapshot", "add", disk, "s1")
    try:
        for args in (("remove", disk, "--yes"), ("rename", disk, "other"),
                     ("snapshot", "rollback", disk, "s1", "--yes")):
            res = p("storage", "volume", *args, ok=False)
            assert res.returncode == 1 and f"is a disk of VM {vm}" in res.stderr, res.stderr
    finally:
        p("storage", "volume", "snapshot", "remove", disk, "s1")
    info = p.json("storage", "volume", "info", disk)
    assert info["vm"] == vm and len(info["lockers"]) == 1


def test_vm_definitions_name_only_volumes_that_exist_and_no_one_elses(st: Faults) -> None:
    from pvc.sandbox.sandbox import demo_xml
    p = st.pvc
    before = p.json("vm", "list")
    missing = st.layout.dir / "missing.xml"
    missing.write_text(demo_xml("nodisk", "qemu", 90, "vms/no-such-volume"))
    res = p("vm", "define", str(missing), ok=False)
    assert res.returncode == 1 and "vms/no-such-volume does not exist" in res.stderr
    taken = st.layout.dir / "taken.xml"
    other = st.vm_names()[0]
    taken.write_text(demo_xml("thief", "qemu", 91, f"vms/{other}-disk"))
    res = p("vm", "define", str(taken), ok=False)
    assert res.returncode == 1 and f"already a disk of VM {other}" in res.stderr
    assert p.json("vm", "list") == before    # nothing was defined


def test_undefine_with_delete_volumes_removes_the_disks(st: Faults) -> None:
    from pvc.sandbox.sandbox import demo_xml
    p = st.pvc
    p("storage", "volume", "add", "vms/spare-disk", "16M")
    path = st.layout.dir / "spare.xml"
    path.write_text(demo_xml("spare", "qemu", 92, "vms/spare-disk"))
    p("vm", "define", str(path))
    info = p.json("vm", "info", "spare")
    assert info["volumes"] == ["vms/spare-disk"]
    stored = p("vm", "info", "spare", "--xml").stdout   # completed: monitors and the secret
    assert stored.count("<host ") == 3 and "<auth username=\"libvirt\">" in stored
    gone = p.json("vm", "undefine", "spare", "--delete-volumes", "--yes")
    assert gone["volumes_removed"] == ["vms/spare-disk"]
    assert "vms/spare-disk" not in [v["volume"] for v in p.json("storage", "volume", "list")]


# ------------------------------------------------------------------------------ data

def test_a_live_migration_hands_the_disk_over_without_a_gap(st: Faults) -> None:
    vm = st.vm_names()[0]
    source = home_of(st, vm)
    before = counting_on(st, vm, -1)
    st.pvc("vm", "migrate", vm, "--wait", "--wait-timeout", "120")
    target = home_of(st, vm)
    assert target != source
    counting_on(st, vm, before + 1)
    no_gap(st, vm)
    [locker] = st.pvc.json("storage", "volume", "info", f"vms/{vm}-disk")["lockers"]
    with ceph(st) as c:   # the lock is the target's QEMU's, not the source's
        [held] = c.lockers("vms", f"{vm}-disk")
    assert held.client == locker and held.address.startswith(address(st, target) + ":")


def test_a_flush_sets_noout_and_the_disks_follow_their_vms(st: Faults) -> None:
    node = st.nodes[-1]
    vms = sorted(vm for vm, nodes in st.where().items() if nodes == [node])
    assert vms
    marks = {vm: counting_on(st, vm, -1) for vm in vms}
    st.pvc("node", "flush", node, "--wait", "--wait-timeout", "180")
    assert storage_status(st)["host_flags"] == {node: ["noout"]}
    assert st.pvc.cluster_status()["reasons"] == []    # noout is the flush's: not a problem
    for vm, mark in marks.items():
        counting_on(st, vm, mark + 1)
        no_gap(st, vm)
    st.pvc("node", "unflush", node, "--wait", "--wait-timeout", "180")
    assert storage_status(st)["host_flags"] == {}


# ------------------------------------------------------------------------------ faults

def test_an_osd_killed_warns_then_recovers(st: Faults) -> None:
    victim = st.nodes[1]
    vm = st.vm_names()[0]
    st.dead(f"ceph-osd-{victim}")
    try:
        until("Ceph to see the OSD down", lambda: "OSD_DOWN" in storage_status(st)["checks"])
        reasons = st.pvc.cluster_status()["reasons"]
        assert any(r.startswith("storage: OSD_DOWN") for r in reasons), reasons
        mark = counter(st, vm)
        counting_on(st, vm, mark + 1)   # two replicas of three still take writes
    finally:
        st.pvc("sandbox", "process", "start", f"ceph-osd-{victim}", "--port-offset", OFFSET)
    until("Ceph healthy again", lambda: storage_status(st)["health"] == "HEALTH_OK")
    no_gap(st, vm)


def test_a_monitor_killed_leaves_a_quorum_that_serves(st: Faults) -> None:
    victim = st.coordinators[-1]
    vm = st.vm_names()[0]
    st.dead(f"ceph-mon-{victim}")
    try:
        until("Ceph to see the monitor down", lambda: "MON_DOWN" in storage_status(st)["checks"])
        status = storage_status(st)
        assert victim not in status["monitors"]["quorum"]
        assert len(status["monitors"]["quorum"]) == 2
        mark = counter(st, vm)
        counting_on(st, vm, mark + 1)
        st.pvc("storage", "volume", "add", "vms/during-mon-loss", "8M")
        st.pvc("storage", "volume", "remove", "vms/during-mon-loss", "--yes")
    finally:
        st.pvc("sandbox", "process", "start", f"ceph-mon-{victim}", "--port-offset", OFFSET)
    until("the monitor back in quorum",
          lambda: victim in storage_status(st)["monitors"]["quorum"])


def test_a_storage_node_powered_off_its_vms_continue_from_their_disks(st: Faults) -> None:
    victim = st.nodes[-1]     # not a coordinator: its OSD and its VMs go, the quorums stay
    alive = [n for n in st.nodes if n != victim]
    vms = sorted(vm for vm, nodes in st.where().items() if nodes == [victim])
    assert vms
    marks = {vm: counting_on(st, vm, -1) for vm in vms}
    res = st.pvc("node", "power", victim, "off", "--yes", "--reason", "test")
    assert f"{victim}: power off (as its BMC reports it)" in res.stdout, res.stdout
    fence = st.pvc.json("node", "info", victim)["fence"]
    cut = fence.get("blocklisted", [])
    assert cut and all(a.startswith(address(st, victim) + ":") for a in cut), fence
    with ceph(st) as c:   # what it ran may not write, should it still run
        assert set(cut) <= set(c.blocklist())
    for vm in vms:
        until(f"{vm} running once elsewhere", lambda: len(
            [n for n in alive for d in st.hv(n).running().values() if d.name == vm]) == 1,
            FENCE_WAIT)
        counting_on(st, vm, marks[vm])
        no_gap(st, vm)
    reasons = st.pvc.cluster_status()["reasons"]
    assert any(r.startswith("storage: OSD") for r in reasons), reasons
    st.bring_back(victim)
    with ceph(st) as c:   # back: its old entries lifted
        assert not set(cut) & set(c.blocklist())
    assert storage_status(st)["health"] == "HEALTH_OK"
    for vm in vms:
        no_gap(st, vm)


def test_storage_commands_refuse_bad_input_with_one_line(st: Faults) -> None:
    p = st.pvc
    before = p.json("storage", "volume", "list")
    for args, says in ((("volume", "add", "vms/x", "lots"), "expected a positive number"),
                       (("volume", "add", "vms/", "1G"), "expected POOL/VOLUME"),
                       (("volume", "info", "vms/no-such"), "vms/no-such"),
                       (("volume", "add", "no-pool/x", "1G"), "no-pool"),
                       (("pool", "remove", "no-pool", "--yes"), "no pool no-pool"),
                       (("pool", "add", "bad name"), "must be 1-63")):
        res = p("storage", *args, ok=False)
        assert res.returncode != 0 and says in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert p.json("storage", "volume", "list") == before   # nothing changed
