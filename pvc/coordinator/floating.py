"""The cluster's floating IP: held by the primary coordinator on its cluster interface, and
announced with a gratuitous ARP when it moves, so clients switch at once."""
from __future__ import annotations

import logging

from pvc.core.config import Config
from pvc.network import ip

log = logging.getLogger(__name__)


class FloatingIP:
    def __init__(self, cidr: str, interface: str) -> None:
        self.cidr = cidr
        self.interface = interface

    @classmethod
    def of(cls, config: Config) -> "FloatingIP | None":
        """The node's floating IP, if the cluster has one and the node an interface for it."""
        if config.cluster.floating_ip and config.node.cluster_interface:
            return cls(config.cluster.floating_ip, config.node.cluster_interface)
        return None

    def take(self, announce: bool = False) -> bool:
        """Hold the address and announce it (when it was added, or `announce`); False if it
        was held already."""
        added = ip.add_address(self.interface, self.cidr)
        if added or announce:
            try:
                ip.gratuitous_arp(self.interface, self.cidr)
            except ip.NetworkError as e:   # the address is here; neighbours learn it later
                log.warning("floating IP %s taken without a gratuitous ARP: %s", self.cidr, e)
        return added

    def release(self) -> bool:
        return ip.del_address(self.interface, self.cidr)

    def held(self) -> bool:
        return ip.has_address(self.interface, self.cidr)
