"""A BMC per sandbox node: OpenIPMI's simulator (`ipmi_sim`) answering IPMI over LAN on the
host's cluster address, its own port, user `admin` and a password from a 0600 file, set up as
a real BMC should be: IPMI 2.0 (lanplus) only, with an authenticated cipher suite, no
anonymous user. ipmi_sim cannot refuse cipher suite 0 (it opens a session with no
authentication, whatever the password), so it listens on loopback behind a guard that answers
every Open Session Request proposing anything but suite 3 or 17 with "no matching cipher
suite", as a BMC with suite 0 disabled does. Its power
is the node's: `power off` kills every process of the node (libvirtd and its guests, the
daemon, worker, tailer, dnsmasq, and on a coordinator its ZooKeeper member, Patroni with its
PostgreSQL and PowerDNS),
tells the supervisor to leave them stopped, and takes the node's network down (its link and
every address it held: the floating IP, a gateway's); `power on` brings the link and the
node's own address up and starts its processes again; `power status` says which.

ipmi_sim runs its chassis_control hook for every power request and blocks while it runs (a
client that waits more than a second retransmits and the hook runs again), so the hook only
records the new state and hands the work to a detached `python -m pvc.sandbox.bmc apply`.
"""
from __future__ import annotations

import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pvc.node import ipmi

if TYPE_CHECKING:
    from pvc.sandbox.network import ClusterNet

USER = "admin"
# A node's programs, in the order power on starts them (power off kills them all at once).
NODE_PROGRAMS = ("zookeeper-", "redis-", "sentinel-", "ceph-mon-", "ceph-mgr-", "ceph-osd-",
                 "libvirtd-", "patroni-", "node-", "worker-", "tailer-", "pdns-")

HOOK = """#!/bin/bash
# ipmi_sim's chassis_control for one node: PROG NODE get power | set power 0|1 | set reset 1
# The state file says on, cutting (power off asked, processes being killed) or off (all dead).
for fd in /proc/$$/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null
state=@STATE@
case "$2 $3" in
  "get power") [ "$(cat "$state" 2>/dev/null)" = off ] && echo power:0 || echo power:1 ;;
  "set power") [ "$4" = 0 ] && echo cutting > "$state" || echo on > "$state"
               setsid @PYTHON@ -m pvc.sandbox.bmc apply @BASE@ @NODE@ </dev/null >>@LOG@ 2>&1 & ;;
  "set reset") setsid @PYTHON@ -m pvc.sandbox.bmc apply @BASE@ @NODE@ </dev/null >>@LOG@ 2>&1 & ;;
esac
exit 0
"""

EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""


def port(port_offset: int, index: int) -> int:
    """index: 1-based node number."""
    return 23000 + port_offset + index


def inner_port(udp_port: int) -> int:
    """Where ipmi_sim itself listens, on loopback, behind the guard."""
    return udp_port + 1000


def files(base: Path, node: str, address: str, udp_port: int, password: str) -> Path:
    """Write one node's BMC configuration; its directory."""
    d = base / "bmc" / node
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    (d / "power").write_text("on\n")
    hook = d / "chassis"
    text = HOOK
    for key, value in (("STATE", d / "power"), ("PYTHON", sys.executable), ("BASE", base),
                       ("NODE", node), ("LOG", d / "apply.log")):
        text = text.replace(f"@{key}@", str(value))
    hook.write_text(text)
    hook.chmod(0o700)
    (d / "bmc.emu").write_text(EMU)
    # no allowed_auths_* line: no IPMI 1.5 session at any privilege; no user 1: no anonymous
    lan = (f'name "{node}-bmc"\nset_working_mc 0x20\n'
           "startlan 1\n"
           f"  addr 127.0.0.1 {inner_port(udp_port)}\n"
           "  priv_limit admin\n"
           f"  guid {udp_port:032x}\n"
           "endlan\n"
           f'chassis_control "{hook} {node}"\n'
           f'user 2 true "{USER}" "{password}" admin 10 md5\n')
    fd = os.open(d / "lan.conf", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(lan)
    (d / "state").mkdir(exist_ok=True)
    (d / "listen").write_text(f"{address} {udp_port}\n")
    return d


def command(d: Path) -> list[str]:
    return [sys.executable, "-m", "pvc.sandbox.bmc", "run", str(d)]


def run(d: Path) -> None:
    """ipmi_sim on loopback and the guard in front of it; ends when ipmi_sim ends."""
    address, udp_port = (d / "listen").read_text().split()
    sim = subprocess.Popen(["ipmi_sim", "-n", "-c", str(d / "lan.conf"), "-f",
                            str(d / "bmc.emu"), "-s", str(d / "state")])
    signal.signal(signal.SIGTERM, lambda *_: sim.terminate())
    try:
        guard((address, int(udp_port)), ("127.0.0.1", inner_port(int(udp_port))), sim.poll)
    finally:
        sim.terminate()
        sim.wait(5)


# A request that waited longer than this in the guard's socket (the guard was stopped, as a
# test makes a BMC unreachable) is dropped, as the network to an unreachable BMC would: a
# client that gave up long ago must not power a node off when the BMC comes back.
STALE_AFTER = 1.0
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)   # Linux's; Python does not name it


def _receive(sock: socket.socket) -> tuple[bytes, tuple[str, int], float]:
    """A datagram, its sender and when the kernel received it (SO_TIMESTAMP)."""
    packet, ancillary, _flags, sender = sock.recvmsg(4096, socket.CMSG_SPACE(16))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
            seconds, micros = struct.unpack("ll", data[:16])
            return packet, sender, seconds + micros / 1e6
    return packet, sender, time.time()


def guard(listen: tuple[str, int], upstream: tuple[str, int],
          ended: Callable[[], int | None]) -> None:
    """Relay UDP between clients and the BMC, one upstream socket per client so answers find
    their way back; refuse Open Session Requests that do not propose an authenticated suite."""
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
    front.bind(listen)
    sel = selectors.DefaultSelector()
    sel.register(front, selectors.EVENT_READ)
    clients: dict[tuple[str, int], tuple[socket.socket, float]] = {}
    while ended() is None:
        for key, _ in sel.select(timeout=1.0):
            sock = key.fileobj
            if sock is front:
                packet, client, received = _receive(front)
                if time.time() - received > STALE_AFTER:
                    continue   # sent while the BMC was unreachable: a network loses it
                proposed = ipmi.proposed_algorithms(packet)
                if proposed is not None and proposed not in ipmi.AUTHENTICATED_SUITES:
                    front.sendto(ipmi.open_session_refusal(packet), client)
                    continue
                back = clients.get(client, (None, 0.0))[0]
                if back is None:
                    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    back.connect(upstream)
                    sel.register(back, selectors.EVENT_READ, client)
                clients[client] = (back, time.monotonic())
                back.send(packet)
            else:
                try:
                    front.sendto(sock.recv(4096), key.data)   # type: ignore[union-attr]
                except OSError:
                    pass
        for client, (back, last) in list(clients.items()):   # forget idle clients
            if time.monotonic() - last > 300:
                sel.unregister(back)
                back.close()
                del clients[client]


def apply(base: Path, node: str) -> None:
    """Make the node's processes match its BMC's power state."""
    from pvc.sandbox import procs
    from pvc.sandbox.supervisor import Supervisor
    sup = Supervisor(base)
    state = base / "bmc" / node / "power"
    power = state.read_text().strip()
    programs = sup.programs()
    mine = [p + node for p in NODE_PROGRAMS if p + node in programs]
    if power in ("cutting", "off"):
        groups = []
        for name in mine:   # frozen first: a power cut runs no handler (no clean stop)
            pid = int(programs[name].get("pid") or 0)
            if not pid:
                continue   # not running (0 would name this very process's group)
            try:
                groups.append(os.getpgid(pid))
                os.killpg(groups[-1], signal.SIGSTOP)
            except OSError:
                pass
        for name in mine:   # a requested stop: the supervisor will not start them again
            sup.stop_program(name, wait=False)   # (its SIGTERM waits: they are stopped)
        for pgid in groups:   # and the power is gone
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        # and what left those groups: guests, virtlogd, dnsmasq, PostgreSQL (Patroni starts it
        # in a session of its own)
        for pattern in (f"{base}/nodes/{node}/", f"{base}/db/{node}/",
                        f"{base}/db/pdns-{node}/"):
            for pid in procs.processes_mentioning(pattern):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for pidfile in base.glob(f"nodes/{node}/libvirt/run/qemu/*.pid"):
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        net, index = _network(base, node)
        net.power_off(node)
        state.write_text("off\n")   # only now does the BMC report the power off
    else:
        net, index = _network(base, node)
        if index:
            net.power_on(node, index)
        for name in mine:
            if programs[name].get("state") != "RUNNING":
                sup.start_program(name)


def _network(base: Path, node: str) -> tuple[ClusterNet, int]:
    """The sandbox's cluster network and the node's 1-based index in it (0: unknown)."""
    import json

    from pvc.sandbox.network import ClusterNet
    state = json.loads((base / "state.json").read_text())
    nodes = state.get("nodes", [])
    return (ClusterNet(base, int(state.get("port_offset", 0))),
            nodes.index(node) + 1 if node in nodes else 0)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "apply":
        apply(Path(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "run":
        run(Path(sys.argv[2]))
