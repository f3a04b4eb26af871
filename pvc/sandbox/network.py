"""The sandbox's cluster network: each node in a network namespace of its own, with an address
on a shared segment (a bridge in a "switch" namespace), as real nodes on a cluster network.

    root namespace ── <prefix>h 10.200.X.254 ──┐
                                             [br0 in <prefix>-sw]
    <prefix>-hv1: cl0 10.200.X.1 ─────────────┤
    <prefix>-hv2: cl0 10.200.X.2 ─────────────┤
    <prefix>-cli: cl0 10.200.X.99 (a client, for measurements)

ZooKeeper and Redis listen on the root side's address, so node processes reach them over the
segment and the CLI reaches them as before; the floating IP (10.200.X.250) moves between the
nodes' cl0. Names derive from the sandbox directory and port offset, so two sandboxes (the
test suite's among them) coexist; the subnet's third octet comes from the port offset.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pvc.network import ip

CLUSTER_LINK = "cl0"
BRIDGE = "br0"
UNDERLAY_MTU = 1550   # room for VXLAN's 50 bytes: the managed networks' guests get 1500


@dataclass(frozen=True)
class ClusterNet:
    dir: Path
    port_offset: int

    @property
    def prefix(self) -> str:
        digest = hashlib.sha1(f"{self.dir}:{self.port_offset}".encode()).hexdigest()[:4]
        return f"pvc{digest}"

    @property
    def octet(self) -> int:
        return (self.port_offset // 100) % 250

    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def client(self) -> str:
        return f"{self.prefix}-cli"

    @property
    def host_link(self) -> str:
        return f"{self.prefix}h"

    def address(self, last: int) -> str:
        return f"10.200.{self.octet}.{last}"

    def cidr(self, last: int) -> str:
        return f"{self.address(last)}/24"

    @property
    def host_address(self) -> str:
        return self.address(254)

    @property
    def floating_ip(self) -> str:
        return self.cidr(250)

    @property
    def client_address(self) -> str:
        return self.address(99)

    def node_address(self, index: int) -> str:
        """index: 1-based node number."""
        return self.address(index)

    # ------------------------------------------------------------------ life
    def up(self, nodes: list[str]) -> None:
        ip.add_netns(self.switch)
        ip.add_bridge(BRIDGE, self.switch, mtu=UNDERLAY_MTU)
        ip.add_veth(self.host_link, None, "host", self.switch, mtu=UNDERLAY_MTU)
        ip.set_master("host", BRIDGE, self.switch)
        ip.add_address(self.host_link, self.cidr(254))
        for i, node in enumerate(nodes, 1):
            self._attach(self.ns(node), f"n-{node}", i)
            # PowerDNS binds the floating IP on every coordinator; the primary's receives
            ip.sysctl(self.ns(node), "net.ipv4.ip_nonlocal_bind", "1")
        self._attach(self.client, "client", 99)

    def _attach(self, ns: str, port: str, last: int) -> None:
        ip.add_netns(ns)
        ip.add_veth(CLUSTER_LINK, ns, port, self.switch, mtu=UNDERLAY_MTU)
        ip.set_master(port, BRIDGE, self.switch)
        ip.add_address(CLUSTER_LINK, self.cidr(last), ns)

    def power_off(self, node: str) -> None:
        """The node's side of the network as a powered-off host leaves it: no address (its
        cluster address, a floating IP, a gateway's), its link down."""
        ip.flush_addresses(self.ns(node))
        ip.set_link_up(CLUSTER_LINK, False, self.ns(node))

    def power_on(self, node: str, index: int) -> None:
        """As the host's network comes up at boot: its link and its own address (what the
        daemon held, the floating IP, a gateway, it must win again)."""
        ip.set_link_up(CLUSTER_LINK, True, self.ns(node))
        ip.add_address(CLUSTER_LINK, self.cidr(index), self.ns(node))

    def down(self) -> None:
        for ns in ip.netns_list(self.prefix + "-"):
            ip.del_netns(ns)
        ip.del_link(self.host_link)    # gone with its peer already, unless the switch was
