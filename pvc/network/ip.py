"""The `ip` tool (iproute2) and arping: the only module that changes network interfaces.

Every call names the network namespace it acts in (None: the one this process is in), is
bounded in time, and turns a failure into one line naming what failed.
"""
from __future__ import annotations

import ipaddress
import shutil
import subprocess
import threading
from pathlib import Path

from pvc.core.errors import PvcError

TIMEOUT = 10.0
NETNS_DIR = Path("/run/netns")


class NetworkError(PvcError):
    """The kernel refused a network change."""


def run(*args: str, netns: str | None = None, check: bool = True) -> str:
    """`ip [-n NETNS] ARGS…`; its output."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    return _run(cmd, check)


def _run(cmd: list[str], check: bool = True) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise NetworkError(f"{' '.join(cmd)}: no answer in {TIMEOUT:g}s") from None
    except FileNotFoundError:
        raise NetworkError(f"{cmd[0]} is not installed") from None
    if check and res.returncode != 0:
        detail = (res.stderr.strip().splitlines() or ["failed"])[-1]
        raise NetworkError(f"{' '.join(cmd)}: {detail}")
    return res.stdout


# ---------------------------------------------------------------------- namespaces

def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def add_netns(name: str) -> None:
    if not netns_exists(name):
        run("netns", "add", name)
    run("link", "set", "lo", "up", netns=name)


def del_netns(name: str) -> None:
    if netns_exists(name):
        run("netns", "del", name)


def netns_list(prefix: str = "") -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def sysctl(name: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl inside network namespace name."""
    _run(in_netns(name, ["sysctl", "-qw", f"{key}={value}"]))


def in_netns(name: str, command: list[str]) -> list[str]:
    """command, run inside network namespace name (`ip netns exec` keeps the PID)."""
    return ["ip", "netns", "exec", name, *command]


# ---------------------------------------------------------------------- links

def link_exists(name: str, netns: str | None = None) -> bool:
    return run("link", "show", name, netns=netns, check=False) != ""


def add_bridge(name: str, netns: str | None = None, mtu: int = 0) -> None:
    if not link_exists(name, netns):
        run("link", "add", name, "type", "bridge", netns=netns)
    if mtu:
        run("link", "set", name, "mtu", str(mtu), netns=netns)
    run("link", "set", name, "up", netns=netns)


def add_veth(name: str, netns: str | None, peer: str, peer_netns: str | None,
             mtu: int = 0) -> None:
    """A veth pair: `name` in netns, `peer` in peer_netns (None: this namespace)."""
    if link_exists(name, netns):
        return
    args = ["link", "add", name]
    if netns:
        args += ["netns", netns]
    args += ["type", "veth", "peer", "name", peer]
    if peer_netns:
        args += ["netns", peer_netns]
    run(*args)
    for link, ns in ((name, netns), (peer, peer_netns)):
        if mtu:
            run("link", "set", link, "mtu", str(mtu), netns=ns)
        run("link", "set", link, "up", netns=ns)


def set_master(link: str, bridge: str, netns: str | None = None) -> None:
    run("link", "set", link, "master", bridge, "up", netns=netns)


def del_link(name: str, netns: str | None = None) -> None:
    if link_exists(name, netns):
        run("link", "del", name, netns=netns)


def links(prefix: str, netns: str | None = None) -> list[str]:
    """Names of the links whose name starts with prefix."""
    out = run("-o", "link", "show", netns=netns, check=False)
    found = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
             if line.count(":") >= 2]
    return sorted(name for name in found if name.startswith(prefix))


def mtu(link: str, netns: str | None = None) -> int:
    out = run("-o", "link", "show", link, netns=netns)
    words = out.split()
    return int(words[words.index("mtu") + 1])


def add_vxlan(name: str, vni: int, dev: str, local: str, mtu: int = 0,
              netns: str | None = None, port: int = 4789) -> None:
    """A VXLAN interface for vni over dev, from local; peers are flood entries (below)."""
    if not link_exists(name, netns):
        run("link", "add", name, "type", "vxlan", "id", str(vni), "dstport", str(port),
            "dev", dev, "local", local, netns=netns)
    if mtu:
        run("link", "set", name, "mtu", str(mtu), netns=netns)
    run("link", "set", name, "up", netns=netns)


FLOOD = "00:00:00:00:00:00"   # the VXLAN's all-zero entry: where broadcasts and unknowns go


def _bridge(*args: str, netns: str | None = None, check: bool = True) -> str:
    return _run(["bridge", *(["-n", netns] if netns else []), *args], check)


def flood_peers(link: str, netns: str | None = None) -> set[str]:
    """The peers a VXLAN floods to (its all-zero forwarding entries)."""
    out = _bridge("fdb", "show", "dev", link, netns=netns, check=False)
    return {line.split(" dst ")[1].split()[0] for line in out.splitlines()
            if line.startswith(FLOOD) and " dst " in line}


def set_flood_peers(link: str, peers: set[str], netns: str | None = None) -> None:
    current = flood_peers(link, netns)
    for peer in sorted(peers - current):
        _bridge("fdb", "append", FLOOD, "dev", link, "dst", peer, netns=netns)
    for peer in sorted(current - peers):
        _bridge("fdb", "del", FLOOD, "dev", link, "dst", peer, netns=netns)


# ---------------------------------------------------------------------- addresses

def addresses(link: str, netns: str | None = None) -> list[str]:
    """The IPv4 addresses of link, as CIDR strings."""
    out = run("-4", "-o", "addr", "show", "dev", link, netns=netns, check=False)
    return [line.split()[3] for line in out.splitlines() if " inet " in line]


def has_address(link: str, cidr: str, netns: str | None = None) -> bool:
    ip = cidr.split("/")[0]
    return any(a.split("/")[0] == ip for a in addresses(link, netns))


def add_address(link: str, cidr: str, netns: str | None = None) -> bool:
    """Add cidr to link; False if it was already there."""
    if has_address(link, cidr, netns):
        return False
    run("addr", "add", cidr, "dev", link, netns=netns)
    return True


def del_address(link: str, cidr: str, netns: str | None = None) -> bool:
    """Remove cidr from link; False if it was not there."""
    if not has_address(link, cidr, netns):
        return False
    run("addr", "del", cidr, "dev", link, netns=netns)
    return True


def gratuitous_arp(link: str, cidr: str, netns: str | None = None, count: int = 2) -> None:
    """Tell the segment that cidr's address is here now (iputils-arping -U), so neighbours
    update their ARP caches at once instead of when the old entry goes stale. The first
    announcement leaves at once; the others follow a second apart in the background."""
    if shutil.which("arping") is None:
        raise NetworkError("arping is not installed (Debian: iputils-arping)")
    ip = str(ipaddress.ip_interface(cidr).ip)
    cmd = ["arping", "-q", "-U", "-c", str(count), "-I", link, ip]
    proc = subprocess.Popen(in_netns(netns, cmd) if netns else cmd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    threading.Thread(target=proc.wait, name="arping", daemon=True).start()   # reaps it


def set_link_up(name: str, up: bool, netns: str | None = None) -> None:
    run("link", "set", name, "up" if up else "down", netns=netns)


def flush_addresses(netns: str) -> None:
    """Every global address of every link in netns goes (what a power cut does to a host)."""
    run("address", "flush", "scope", "global", netns=netns)
