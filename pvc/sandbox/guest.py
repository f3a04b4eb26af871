"""The sandbox's tiny guest: a Debian cloud kernel and a busybox initramfs, built from Debian
packages (`apt-get download`, nothing installed). It boots in ~2 s under TCG, prints a banner
and then a numbered line every few seconds on its serial console, and powers off cleanly on an
ACPI power-button press (so a graceful shutdown really is graceful).

    python -m pvc.sandbox.guest build     # idempotent
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pvc.core.errors import PvcError

GUEST_DIR = Path(os.environ.get("PVC_GUEST_DIR", "/var/cache/pvc/guest"))
KERNEL = "vmlinuz"
INITRD = "initrd.gz"
TICK_SECONDS = 5

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
NAME=$(sed -n 's/.*pvc.name=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
TICK=$(sed -n 's/.*pvc.tick=\\([0-9]*\\).*/\\1/p' /proc/cmdline)
hostname "${NAME:-guest}"
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
acpid -c /etc/acpi -l /dev/null
echo "pvc demo guest ${NAME:-guest} booted (kernel $(uname -r))"
if ip link set eth0 up 2>/dev/null; then   # on a managed network: DHCP, renewed in the background
    udhcpc -i eth0 -b -s /etc/udhcpc.sh -x "hostname:${NAME:-guest}" -F "${NAME:-guest}" \
        >/dev/null 2>&1
fi
# A disk (the sandbox's demo VMs have one on Ceph) keeps a counter that outlives the guest:
# sector 0 holds the last value, sector 8+N the line of value N; each written with O_DIRECT,
# so what the disk holds is what the guest wrote, wherever the guest runs next.
c=""
if [ -b /dev/vda ]; then
    last=$(dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | tr -d '\\0' |
           sed -n 's/^pvc-counter \\([0-9]*\\).*/\\1/p')
    c=$(( ${last:--1} + 1 ))
    echo "${NAME:-guest} disk /dev/vda: counter continues at $c"
fi
BENCH=$(sed -n 's/.*pvc.bench=\\([0-9]*\\).*/\\1/p' /proc/cmdline)
# bench/bench_storage.py: the disk as the guest sees it, O_DIRECT, one request at a time, past
# the counter's sectors; each line: name, bytes, the guest's uptime before and after
bench() {   # bench NAME BYTES dd-arguments…
    name=$1 bytes=$2
    shift 2
    t0=$(cut -d' ' -f1 /proc/uptime)
    dd "$@" 2>/dev/null
    echo "pvc-bench $name $bytes $t0 $(cut -d' ' -f1 /proc/uptime)"
}
if [ -n "$c" ] && [ -n "$BENCH" ]; then
    bench seq-write-4M $((BENCH * 1048576)) if=/dev/zero of=/dev/vda bs=4M count=$((BENCH / 4)) seek=4 oflag=direct
    bench seq-read-4M $((BENCH * 1048576)) if=/dev/vda of=/dev/null bs=4M count=$((BENCH / 4)) skip=4 iflag=direct
    bench write-4K-qd1 4096000 if=/dev/zero of=/dev/vda bs=4k count=1000 seek=8192 oflag=direct
    bench read-4K-qd1 4096000 if=/dev/vda of=/dev/null bs=4k count=1000 skip=8192 iflag=direct
    echo "pvc-bench done"
fi
put() {   # put SECTOR TEXT
    printf '%%s\\n' "$2" | dd of=/dev/vda bs=512 seek="$1" count=1 conv=sync,notrunc \\
        oflag=direct 2>/dev/null
}
n=0
while true; do
    echo "${NAME:-guest} tick $n"
    if [ -n "$c" ]; then
        put $((8 + c)) "pvc-counter $c ${NAME:-guest} $(date +%%s)" &&
            put 0 "pvc-counter $c ${NAME:-guest}" && echo "${NAME:-guest} disk $c"
        c=$((c + 1))
    fi
    n=$((n + 1))
    sleep "${TICK:-%d}"
done
""" % TICK_SECONDS

DHCP_SCRIPT = """#!/bin/sh
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route replace default via "${router%% *}"
        echo "$(hostname) got $ip on $interface";;
    deconfig) ip addr flush dev "$interface";;
esac
"""

# The network and disk drivers are modules in Debian's cloud kernel, loaded in this order (each after what
# it depends on; alphabetical order fails), then the power button.
MODULES = ("failover", "net_failover", "virtio_ring", "virtio", "virtio_pci_legacy_dev",
           "virtio_pci_modern_dev", "virtio_pci", "virtio_net", "virtio_blk", "button", "evdev")
VERSION = "5"   # what the initramfs holds; a cached image of another version is rebuilt

POWER_BUTTON = """#!/bin/sh
echo "${HOSTNAME:-guest}: power button pressed, powering off"
poweroff -f
"""


def paths(guest_dir: Path = GUEST_DIR) -> tuple[Path, Path]:
    return guest_dir / KERNEL, guest_dir / INITRD


def is_built(guest_dir: Path = GUEST_DIR) -> bool:
    stamp = guest_dir / "version"
    return all(p.is_file() and p.stat().st_size > 0 for p in paths(guest_dir)) and \
        stamp.is_file() and stamp.read_text().strip() == VERSION


def build(guest_dir: Path = GUEST_DIR) -> tuple[Path, Path]:
    """Build kernel + initramfs into guest_dir unless already there."""
    kernel, initrd = paths(guest_dir)
    if is_built(guest_dir):
        return kernel, initrd
    guest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pvc-guest-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # apt's download user must be able to write here
        kpkg = _kernel_package()
        _run(["apt-get", "download", "-q", kpkg, "busybox-static"], cwd=work)
        _run(["dpkg-deb", "-x", _one(work, "linux-image-*.deb"), "k"], cwd=work)
        _run(["dpkg-deb", "-x", _one(work, "busybox-static_*.deb"), "bb"], cwd=work)
        root = work / "initrd"
        for d in ("bin", "proc", "sys", "dev", "etc/acpi/PWRF", "lib/modules"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "bb/bin/busybox", root / "bin/busybox")
        _write_exec(root / "init", INIT)
        _write_exec(root / "etc/acpi/PWRF/00000080", POWER_BUTTON)
        _write_exec(root / "etc/udhcpc.sh", DHCP_SCRIPT)
        loaded = []
        for module in MODULES:   # built in where not found as a module
            found = list((work / "k/lib/modules").glob(f"*/kernel/**/{module}.ko"))
            if found:
                shutil.copy(found[0], root / "lib/modules" / found[0].name)
                loaded.append(module)
        (root / "lib/modules/order").write_text(" ".join(loaded) + "\n")
        vmlinuz = next((work / "k/boot").glob("vmlinuz-*"))
        shutil.copy(vmlinuz, kernel.with_suffix(".tmp"))
        initrd.with_suffix(".tmp").write_bytes(gzip.compress(_cpio(root)))
        kernel.with_suffix(".tmp").rename(kernel)
        initrd.with_suffix(".tmp").rename(initrd)
        (guest_dir / "version").write_text(VERSION + "\n")
    return kernel, initrd


def _kernel_package() -> str:
    out = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"],
                         capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split()[1]
    raise PvcError("cannot find the Debian cloud kernel package (apt-cache depends "
                   "linux-image-cloud-amd64 found none; run apt-get update)")


def _cpio(root: Path) -> bytes:
    """A newc cpio archive of root (what `find . | cpio -o -H newc` makes)."""
    out = io.BytesIO()
    ino = 1
    entries = sorted(root.rglob("*"))
    for path in entries:
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        data = path.read_bytes() if path.is_file() else b""
        _cpio_entry(out, rel, st.st_mode, len(data), ino, data)
        ino += 1
    _cpio_entry(out, "TRAILER!!!", 0, 0, 0, b"")
    return out.getvalue()


def _cpio_entry(out: io.BytesIO, name: str, mode: int, size: int, ino: int, data: bytes) -> None:
    fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    header = b"070701" + b"".join(f"{f:08x}".encode() for f in fields)
    out.write(header + name.encode() + b"\0")
    out.write(b"\0" * ((4 - out.tell() % 4) % 4))
    out.write(data)
    out.write(b"\0" * ((4 - out.tell() % 4) % 4))


def _write_exec(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _one(work: Path, pattern: str) -> str:
    found = sorted(work.glob(pattern))
    if not found:
        raise PvcError(f"apt-get download produced no {pattern}")
    return found[0].name


def _run(cmd: list[str], cwd: Path) -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        msg = (res.stderr.strip().splitlines() or ["failed"])[-1]
        raise PvcError(f"{' '.join(cmd[:3])}: {msg}")


def main(argv: list[str]) -> None:
    if argv[1:] != ["build"]:
        sys.exit("usage: python -m pvc.sandbox.guest build")
    try:
        kernel, initrd = build()
    except PvcError as e:
        sys.exit(f"error: {e}")
    print(f"guest image: {kernel} {initrd}")


if __name__ == "__main__":
    main(sys.argv)
