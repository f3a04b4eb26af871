"""Managed networks on the shared sandbox, through the CLI and asked of the kernel: the demo
network, a network added (a VXLAN and a bridge on every node, flooding to the others, carrying
full-size frames between node namespaces) and removed (gone everywhere), and what is refused."""
from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from pvc.network import ip
from pvc.sandbox import sandbox as sb
from tests.e2e.conftest import Pvc, wait_until

pytestmark = pytest.mark.e2e
NODES = ["hv1", "hv2", "hv3"]


def net(pvc: Pvc) -> sb.network.ClusterNet:
    return sb.Layout(Path(pvc.env["PVC_SANDBOX_DIR"]), int(pvc.offset)).net


def built(pvc: Pvc, node: str) -> dict[str, set[str]]:
    """The managed-network links in node's namespace, each VXLAN with its flood peers."""
    ns = net(pvc).ns(node)
    found = {link: set() for link in ip.links("vmbr", ns)}
    found.update({link: ip.flood_peers(link, ns) for link in ip.links("vxlan", ns)})
    return found


def peers_of(pvc: Pvc, node: str) -> set[str]:
    return {net(pvc).node_address(NODES.index(n) + 1) for n in NODES if n != node}


@contextmanager
def addresses_on(pvc: Pvc, bridge: str, where: dict[str, str]) -> Iterator[None]:
    """Test addresses on a bridge in some nodes' namespaces, removed afterwards."""
    for node, cidr in where.items():
        ip.add_address(bridge, cidr, net(pvc).ns(node))
    try:
        yield
    finally:
        for node, cidr in where.items():
            ip.del_address(bridge, cidr, net(pvc).ns(node))


def test_the_sandbox_has_a_demo_network_with_its_vms(pvc: Pvc) -> None:
    [demo] = pvc.json("network", "list")
    assert (demo["vni"], demo["domain"], demo["bridge"]) == (100, "sandbox.pvc", "vmbr100")
    demos = sorted(v for v in pvc.vms() if v.startswith("demo"))
    assert len(demos) == 6 and set(demos) <= set(demo["vms"])
    for node in NODES:
        assert built(pvc, node)["vxlan100"] == peers_of(pvc, node)
    line = pvc.error("network", "remove", "100")
    assert "network 100 is used by 6 VM(s): demo1" in line
    assert pvc.json("network", "info", "100")["vni"] == 100


def test_a_network_is_built_on_every_node_and_carries_full_frames(pvc: Pvc) -> None:
    added = pvc.json("network", "add", "200", "--domain", "two.pvc", "--ipv4",
                     "10.111.0.0/24", "--gateway", "10.111.0.1")
    assert added["bridge"] == "vmbr200" and added["vms"] == []
    try:
        for node in NODES:
            wait_until(f"vxlan200 on {node}",
                       lambda: built(pvc, node).get("vxlan200") == peers_of(pvc, node), 30)
            assert "vmbr200" in built(pvc, node)
            assert ip.mtu("vmbr200", net(pvc).ns(node)) == 1500
        with addresses_on(pvc, "vmbr200", {"hv1": "10.111.0.251/24", "hv3": "10.111.0.253/24"}):
            ping = subprocess.run(ip.in_netns(net(pvc).ns("hv1"), [
                "ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1472", "10.111.0.253"]),
                capture_output=True, text=True, timeout=20)
            assert ping.returncode == 0, ping.stdout   # 1500-byte frames, not fragmented
    finally:
        pvc("network", "remove", "200")
    for node in NODES:
        wait_until(f"vxlan200 gone from {node}",
                   lambda: not {"vxlan200", "vmbr200"} & set(built(pvc, node)), 30)
    assert "vxlan100" in built(pvc, "hv1")                   # the others stay


@pytest.mark.parametrize("args,said", [
    (["--ipv4", "10.100.0.0/16", "--gateway", "10.100.200.1"], "overlaps network 100"),
    (["--ipv4", "10.112.0.0/24", "--gateway", "10.113.0.1"], "outside 10.112.0.0/24"),
    (["--ipv4", "10.112.0.0/24", "--gateway", "10.112.0.1", "--dhcp-start", "10.112.0.9"],
     "give both --dhcp-start and --dhcp-end"),
    # the underlay: the sandbox's cluster network is 10.200.X.0/24, its nodes .1-.3 there
    (["--ipv4", "10.200.0.0/16", "--gateway", "10.200.255.1"], "overlaps the cluster network"),
])
def test_bad_networks_are_refused_and_change_nothing(pvc: Pvc, args: list[str],
                                                      said: str) -> None:
    before = pvc.json("network", "list")
    line = pvc.error("network", "add", "300", "--domain", "three.pvc", *args)
    assert said in line
    assert pvc.json("network", "list") == before


def test_a_vm_on_an_unknown_network_is_refused(pvc: Pvc, tmp_path: Path) -> None:
    xml = tmp_path / "lost.xml"
    xml.write_text(sb.demo_xml("lost", "test", 9).replace("vmbr100", "vmbr4242"))
    line = pvc.error("vm", "define", str(xml))
    assert "no managed network 4242" in line
    assert "lost" not in pvc.vms()


# ------------------------------------------------------------------------------ DHCP

class DhcpClient:
    """A cheap guest: a namespace with a veth into a node's bridge, running udhcpc (busybox's
    DHCP client) once per `lease()`."""

    def __init__(self, pvc: Pvc, node: str, bridge: str, name: str) -> None:
        self.ns = f"{net(pvc).prefix}-g{name}-{node}"    # a hostname may be on two nodes
        self.name = name
        port = f"g-{name}"[:15]
        ip.add_netns(self.ns)
        ip.add_veth("eth0", self.ns, port, net(pvc).ns(node))
        ip.set_master(port, bridge, net(pvc).ns(node))

    def lease(self, want: str = "") -> str:
        cmd = ["udhcpc", "-i", "eth0", "-n", "-q", "-T", "1", "-A", "1", "-t", "5",
               "-x", f"hostname:{self.name}", "-F", self.name, "-s", "/bin/true"]
        res = subprocess.run(ip.in_netns(self.ns, cmd + (["-r", want] if want else [])),
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        return res.stderr.split("lease of ")[1].split()[0]

    def hold(self, tmp: Path) -> str:
        """Take a lease and keep it (udhcpc in the foreground, configuring its address), so
        that release() can give it back; the address."""
        script, events = tmp / f"{self.name}.sh", tmp / f"{self.name}.events"
        script.write_text('#!/bin/sh\ncase "$1" in bound|renew) ip addr flush dev $interface; '
                          'ip addr add $ip/$mask dev $interface; echo $ip >> ' + str(events) +
                          ';; deconfig) ip addr flush dev $interface;; esac\n')
        script.chmod(0o755)
        self.held = subprocess.Popen(ip.in_netns(self.ns, [
            "udhcpc", "-i", "eth0", "-f", "-R", "-T", "1", "-A", "1",
            "-x", f"hostname:{self.name}", "-F", self.name, "-s", str(script)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return wait_until(f"{self.name}'s lease", lambda: events.exists() and
                          events.read_text().split()[-1:] and events.read_text().split()[-1],
                          20)

    def release(self) -> None:
        """DHCPRELEASE (udhcpc -R sends it when it ends): the lease goes."""
        self.held.terminate()
        self.held.wait(10)

    def mac(self) -> str:
        return ip.run("link", "show", "eth0", netns=self.ns).split("link/ether ")[1].split()[0]

    def close(self) -> None:
        if getattr(self, "held", None) is not None and self.held.poll() is None:
            self.held.kill()
            self.held.wait()
        ip.del_netns(self.ns)


@contextmanager
def dhcp_client(pvc: Pvc, node: str, name: str) -> Iterator[DhcpClient]:
    client = DhcpClient(pvc, node, "vmbr100", name)
    try:
        yield client
    finally:
        client.close()


def leases(pvc: Pvc) -> dict[str, dict]:
    return {lease["mac"]: lease for lease in pvc.json("network", "leases", "100")}


def recorded_lease(pvc: Pvc, client: DhcpClient) -> dict:
    """The client's lease as the cluster records it. dnsmasq runs its lease script after it
    has answered the client, so the record follows the lease by a moment."""
    return wait_until(f"{client.name}'s lease recorded",
                      lambda: leases(pvc).get(client.mac()), 20)


def answer(pvc: Pvc, node: str, name: str) -> str:
    """What the network's DNS server (dnsmasq, on the primary) answers for name."""
    res = subprocess.run(ip.in_netns(net(pvc).ns(node), [
        "dig", "+short", "+time=2", "+tries=2", "@10.100.0.1", f"{name}.sandbox.pvc"]),
        capture_output=True, text=True, timeout=20)
    return res.stdout.strip()


def primary(pvc: Pvc) -> str:
    return pvc.json("cluster", "status")["primary"]


def test_leases_are_kept_in_the_cluster_and_survive_a_switchover(pvc: Pvc) -> None:
    old = primary(pvc)
    guest_node = next(n for n in NODES if n != old)    # DHCP crosses the VXLAN
    with dhcp_client(pvc, guest_node, "web1") as web1:
        first = web1.lease()
        lease = recorded_lease(pvc, web1)
        assert (lease["ip"], lease["hostname"]) == (first, "web1")
        assert lease["expiry"].endswith("+00:00")                 # ISO 8601 with its zone
        assert answer(pvc, old, "web1") == first
        new = next(n for n in NODES if n not in (old, guest_node))
        pvc("node", "primary", new, "--wait")
        # the gateway moved: served from the new primary, with the leases it had
        gateway = [n for n in NODES if ip.has_address("vmbr100", "10.100.0.1/24",
                                                       net(pvc).ns(n))]
        assert gateway == [new]
        assert answer(pvc, new, "web1") == first
        assert web1.lease(want=first) == first                 # renewed, same address
        with dhcp_client(pvc, old, "web2") as web2:            # and new leases appear
            second = web2.lease()
            assert second != first and recorded_lease(pvc, web2)["ip"] == second
            assert answer(pvc, new, "web2") == second
        pvc("node", "primary", old, "--wait")
        assert answer(pvc, old, "web1") == first


def test_leases_of_an_unknown_network(pvc: Pvc) -> None:
    assert "no managed network 777" in pvc.error("network", "leases", "777")
