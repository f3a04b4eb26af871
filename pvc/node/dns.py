"""The DNS aggregator: a primary-only service that keeps PowerDNS's PostgreSQL database in step
with the managed networks' zones, as each network's dnsmasq (on this node, the primary)
serves them. A zone per network, its A records from a zone transfer of dnsmasq's authoritative
zone (dnspython, from the gateway address: the only peer dnsmasq allows), written through the
Patroni leader (libpq multi-host, read-write), one transaction per zone, the SOA serial bumped
only when something changed.

It writes only while it is active: it starts after the database leader moved to this node and
stops before the primary relinquishes. A pass runs when a lease comes or goes (a ZooKeeper
watch on the leases) or the networks change, and every PERIOD seconds in case one was missed.

PowerDNS itself runs on every coordinator and reads whichever database member answers, so it
keeps answering while the primary (and the database leader) moves.
"""
from __future__ import annotations

import logging
import threading
import time

import dns.name
import dns.query
import dns.rdatatype
import dns.zone

from pvc.coordinator import postgres
from pvc.coordinator.postgres import TTL, Record, drop_other_zones, write_zone
from pvc.core.cluster import Cluster
from pvc.core.config import Config
from pvc.network import managed
from pvc.network.managed import ManagedNetwork

log = logging.getLogger(__name__)
PERIOD = 30.0
XFR_TIMEOUT = 5.0


def answers(address: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a DNS server answers there at all (any answer: it serves)."""
    import dns.exception
    import dns.message
    query = dns.message.make_query("pvc-health-check.invalid.", dns.rdatatype.SOA)
    try:
        dns.query.udp(query, address, port=port, timeout=timeout)
        return True
    except (dns.exception.DNSException, OSError):
        return False


def zone_records(net: ManagedNetwork) -> set[Record]:
    """The network's names as its dnsmasq serves them (a zone transfer from the gateway),
    with the zone's NS; A and AAAA records only (dnsmasq's SOA is its own)."""
    zone = dns.zone.Zone(dns.name.from_text(net.domain), relativize=False)
    dns.query.inbound_xfr(net.gateway, zone, source=net.gateway, lifetime=XFR_TIMEOUT)
    out = {Record(net.domain, "NS", f"ns1.{net.domain}", TTL)}
    for name, node in zone.nodes.items():
        for rdataset in node.rdatasets:
            if rdataset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                for rdata in rdataset:
                    out.add(Record(name.to_text(omit_final_dot=True),
                                   dns.rdatatype.to_text(rdataset.rdtype), rdata.to_text(),
                                   TTL))
    return out


def writer_dsn(config: Config, cluster: Cluster) -> str:
    """Every coordinator's member; libpq connects to the one that takes writes."""
    coordinators = set(config.cluster.coordinators)
    hosts = [n.cluster_address for n in cluster.nodes()
             if n.name in coordinators and n.cluster_address]
    dns_cfg = config.cluster.dns
    return (f"host={','.join(hosts)} port={config.cluster.database.postgres_port} "
            f"dbname={dns_cfg.dbname} user={dns_cfg.user} password={config.dns_password()} "
            f"target_session_attrs=read-write connect_timeout=3 {postgres.DEAD_PEER} "
            f"application_name=pvc-dns-aggregator-{config.node.name}")


class DnsAggregator:
    name = "dns-aggregator"

    def __init__(self, cluster: Cluster, config: Config) -> None:
        self.cluster = cluster
        self.config = config
        self.active = False
        self.nudged = threading.Event()
        self.thread: threading.Thread | None = None
        self.watched: set[int] = set()
        self.passes = 0
        self.writes = 0              # zones written (the metrics export it)
        self.last_success = 0.0      # when a pass last went through
        self.last_error = ""

    # ------------------------------------------------------------------ PrimaryService
    def start(self) -> None:
        self.active = True
        self.watched = set()
        self.refresh()
        self.thread = threading.Thread(target=self._loop, name="dns-aggregator", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.active = False          # no write starts from now on
        self.nudged.set()
        if self.thread is not None:
            self.thread.join(XFR_TIMEOUT + 10)
            self.thread = None

    def refresh(self) -> None:
        """Watch the leases of every network (new ones too) and run a pass."""
        if not self.active:
            return
        for net in managed.all_networks(self.cluster):
            if net.vni not in self.watched:
                self.watched.add(net.vni)
                self.cluster.store.watch_children(
                    self.cluster.schema.network_leases(net.vni), self._on_leases)
        self.nudged.set()

    def _on_leases(self, _children: list[str]) -> bool:
        self.nudged.set()
        return self.active           # the watch ends with the service

    # ------------------------------------------------------------------ the work
    def _loop(self) -> None:
        while self.active:
            self.nudged.wait(PERIOD)
            self.nudged.clear()
            if not self.active:
                break
            try:
                self.sync()
                self.last_error = ""
            except Exception as e:   # the database or a dnsmasq away: next pass retries
                if str(e) != self.last_error:
                    log.warning("DNS aggregator pass failed: %s", e)
                self.last_error = str(e)

    def sync(self) -> list[str]:
        """One pass: every network's zone into the database; what changed. Nothing at all
        (not even a connection) unless the service is active, i.e. this node is the primary."""
        if not self.active:
            return []
        networks = managed.all_networks(self.cluster)
        wanted = {net.domain: zone_records(net) for net in networks}
        changed: list[str] = []
        conn = postgres.connect(writer_dsn(self.config, self.cluster))
        try:
            for domain, records in wanted.items():
                if not self.active:
                    return changed
                if write_zone(conn, domain, records, self.config.node.name):
                    changed.append(domain)
            if self.active:
                changed += [f"-{d}" for d in drop_other_zones(conn, set(wanted))]
        finally:
            conn.close()
        self.passes += 1
        self.writes += len(changed)
        self.last_success = time.time()
        if changed:
            log.info("DNS aggregator: %s", ", ".join(changed))
        return changed
