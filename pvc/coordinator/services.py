"""Primary-only services: what runs on the primary coordinator alone (the DNS aggregator and
the managed networks' DHCP come here). They start after a takeover and stop before the primary
relinquishes; a service writes only while it is active.
"""
from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger(__name__)


class PrimaryService(Protocol):
    name: str

    def start(self) -> None:
        """Begin serving (this node is the primary now)."""

    def stop(self) -> None:
        """Stop serving and writing (this node is about to stop being the primary)."""


class PrimaryServices:
    """The registry, in start order (stopped in reverse)."""

    def __init__(self) -> None:
        self.services: list[PrimaryService] = []
        self.active = False

    def register(self, service: PrimaryService) -> None:
        self.services.append(service)

    def start_all(self) -> list[str]:
        """Start every service; the failures, each as one line (the others still start).
        Nothing to do when they serve already."""
        if self.active:
            return []
        failed = []
        for svc in self.services:
            try:
                svc.start()
            except Exception as e:   # one service must not keep the others down
                log.exception("primary service %s did not start", svc.name)
                failed.append(f"{svc.name}: {e}")
        self.active = True
        return failed

    def stop_all(self) -> None:
        self.active = False
        for svc in reversed(self.services):
            try:
                svc.stop()
            except Exception:
                log.exception("primary service %s did not stop cleanly", svc.name)
