"""The cluster's floating IP: held by the primary coordinator on its cluster interface, and
announced with a gratuitous ARP when it moves, so clients switch at once."""
from __future__ import annotations

import logging
import threading
import time

from pvc.core.config import Config
from pvc.network import ip

log = logging.getLogger(__name__)
# After a takeover the address is announced again at these offsets (seconds): a client whose
# ARP entry still points at the old holder (it missed the first announcement, or the old
# holder was cut off) moves within a second, not when its cache expires.
REANNOUNCE_AT = (0.5, 1.0, 2.0, 3.0)


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
            self._announce()
            threading.Thread(target=self._reannounce, name="floating-ip-garp",
                             daemon=True).start()
        return added

    def _announce(self) -> None:
        try:
            ip.gratuitous_arp(self.interface, self.cidr)
        except ip.NetworkError as e:   # the address is here; neighbours learn it later
            log.warning("floating IP %s: no gratuitous ARP: %s", self.cidr, e)

    def _reannounce(self) -> None:
        started = time.monotonic()
        for offset in REANNOUNCE_AT:
            time.sleep(max(0.0, started + offset - time.monotonic()))   # the schedule
            if not self.held():
                return   # let go meanwhile: announcing it would pull clients back here
            self._announce()

    def release(self) -> bool:
        return ip.del_address(self.interface, self.cidr)

    def held(self) -> bool:
        return ip.has_address(self.interface, self.cidr)
