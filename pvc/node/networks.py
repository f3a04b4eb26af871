"""A node's part of the managed networks: for each network, a VXLAN interface over the node's
cluster interface (flooding to every other node with networking) and a bridge the VMs' taps
join; both removed when the network goes. Only on nodes with `enable_networking`.

MTU: VXLAN costs 50 bytes. On an underlay of 1550 or more the guests get 1500; on a 1500
underlay they get 1450 (the bridge takes its smallest port's MTU, so this is set up front
rather than discovered by a guest whose large packets vanish).
"""
from __future__ import annotations

import logging

from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.core.errors import PvcError
from pvc.network import ip, managed
from pvc.network.managed import ManagedNetwork

log = logging.getLogger(__name__)
VXLAN_OVERHEAD = 50
GUEST_MTU = 1500


class NodeNetworks:
    def __init__(self, cluster: Cluster, config: Config) -> None:
        self.cluster = cluster
        self.name = config.node.name
        self.underlay = config.node.cluster_interface
        self.local = config.node.cluster_address or config.node.migration_address
        self.applied: tuple[list[ManagedNetwork], set[str]] | None = None

    def usable(self) -> str:
        """Why this node cannot build networks ("" if it can)."""
        if not self.underlay or not self.local:
            return ("networking needs node.cluster_interface and node.cluster_address (or "
                    "migration_address)")
        return ""

    def desired(self) -> tuple[list[ManagedNetwork], set[str]]:
        """The networks, and the other nodes' addresses their VXLANs flood to."""
        peers = {n.cluster_address for n in self.cluster.nodes()
                 if n.name != self.name and n.enable_networking and n.cluster_address}
        return managed.all_networks(self.cluster), peers

    def reconcile(self, force: bool = False) -> str:
        """Make the bridges match the managed networks (only when those or the peers changed,
        unless forced); a sentence when something changed."""
        why = self.usable()
        if why:
            return why
        wanted, peers = self.desired()
        if not force and self.applied == (wanted, peers):
            return ""
        mtu = min(GUEST_MTU, ip.mtu(self.underlay) - VXLAN_OVERHEAD)
        built = set(ip.links(managed.BRIDGE_PREFIX))
        changes = []
        for net in wanted:
            if net.bridge not in built:
                changes.append(f"+{net.bridge}")
            self._ensure(net, peers, mtu)
        names = {n.bridge for n in wanted} | {n.vxlan for n in wanted}
        for link in ip.links(managed.VXLAN_PREFIX) + ip.links(managed.BRIDGE_PREFIX):
            if link not in names and managed.vni_of_bridge(link.replace(
                    managed.VXLAN_PREFIX, managed.BRIDGE_PREFIX, 1)) is not None:
                ip.del_link(link)
                if link.startswith(managed.BRIDGE_PREFIX):
                    changes.append(f"-{link}")
        self.applied = (wanted, peers)
        return f"networks: {' '.join(changes)}" if changes else ""

    def _ensure(self, net: ManagedNetwork, peers: set[str], mtu: int) -> None:
        try:
            ip.add_bridge(net.bridge, mtu=mtu)
            ip.add_vxlan(net.vxlan, net.vni, self.underlay, self.local, mtu=mtu)
            ip.set_master(net.vxlan, net.bridge)
            ip.set_flood_peers(net.vxlan, peers)
        except PvcError as e:
            log.warning("network %s: %s", net.vni, e)
