"""Managed networks: a VXLAN segment per network (its VNI), bridged on every node with
networking enabled; the primary holds each network's gateway and serves DHCP and its zone.

A VM joins a network through the bridge its interface names in its XML:
`<interface type='bridge'><source bridge='vmbr100'/>…` is managed network 100. Names derive
from the VNI (vmbrN, vxlanN: at most 15 characters for the kernel, so any 24-bit VNI fits).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass
from typing import Any

from pvc.core.cluster import Cluster
from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.core.store import NodeExists, NoNode

BRIDGE_PREFIX = "vmbr"
VXLAN_PREFIX = "vxlan"
VNI_MIN, VNI_MAX = 1, 2 ** 24 - 1
PREFIX_MIN, PREFIX_MAX = 8, 29          # a /30 leaves no room for DHCP beside the gateway
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_BRIDGE = re.compile(rf"^{BRIDGE_PREFIX}(\d+)$")


@dataclass(frozen=True)
class ManagedNetwork:
    vni: int
    domain: str
    ipv4: str                   # the subnet, CIDR
    gateway: str
    dhcp_start: str = ""
    dhcp_end: str = ""
    description: str = ""

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.vni}"

    @property
    def vxlan(self) -> str:
        return f"{VXLAN_PREFIX}{self.vni}"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.ipv4)

    @property
    def gateway_cidr(self) -> str:
        return f"{self.gateway}/{self.subnet.prefixlen}"

    @property
    def dhcp(self) -> bool:
        return bool(self.dhcp_start)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ManagedNetwork":
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


def vni_of_bridge(bridge: str) -> int | None:
    """The managed network a bridge name stands for (None: not a managed network's)."""
    m = _BRIDGE.match(bridge)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------- validation

def check(net: ManagedNetwork, others: list[ManagedNetwork]) -> ManagedNetwork:
    """The network as it will be stored, or InvalidInput naming the first problem."""
    if not VNI_MIN <= net.vni <= VNI_MAX:
        raise InvalidInput(f"VNI {net.vni} is out of range ({VNI_MIN}-{VNI_MAX})")
    domain = check_domain(net.domain)
    subnet = _subnet(net.ipv4)
    gateway = _address_in("--gateway", net.gateway, subnet)
    start, end = "", ""
    if net.dhcp_start or net.dhcp_end:
        if not (net.dhcp_start and net.dhcp_end):
            raise InvalidInput("give both --dhcp-start and --dhcp-end, or neither")
        first = _address_in("--dhcp-start", net.dhcp_start, subnet)
        last = _address_in("--dhcp-end", net.dhcp_end, subnet)
        if first > last:
            raise InvalidInput(f"--dhcp-start {first} is after --dhcp-end {last}")
        if first <= gateway <= last:
            raise InvalidInput(f"the gateway {gateway} is inside the DHCP range {first}-{last}")
        start, end = str(first), str(last)
    for other in others:
        if other.vni == net.vni:
            raise InvalidInput(f"network {net.vni} exists already")
        if other.subnet.overlaps(subnet):
            raise InvalidInput(f"{subnet} overlaps network {other.vni} ({other.ipv4})")
        if other.domain == domain:
            raise InvalidInput(f"network {other.vni} already serves the domain {domain}")
    if len(net.description) > 200:
        raise InvalidInput("--description is longer than 200 characters")
    return ManagedNetwork(net.vni, domain, str(subnet), str(gateway), start, end,
                          net.description)


def underlay(cluster: Cluster) -> list[tuple[str, ipaddress.IPv4Network]]:
    """What a managed network must not cover: the cluster network itself (the floating IP's
    subnet) and every address a node registered (cluster and migration addresses)."""
    found = []
    fip = cluster.config.cluster.floating_ip
    if fip:
        found.append(("the cluster network", ipaddress.ip_interface(fip).network))
    for n in cluster.nodes():
        for address in sorted({n.cluster_address, n.migration_address} - {""}):
            try:
                found.append((f"node {n.name}'s address", ipaddress.ip_network(address)))
            except ValueError:
                continue   # a host name, not an address: nothing to overlap
    return [(what, net) for what, net in found if isinstance(net, ipaddress.IPv4Network)]


def refuse_underlay(net: ManagedNetwork, taken: list[tuple[str, ipaddress.IPv4Network]]
                    ) -> None:
    for what, network in taken:
        if net.subnet.overlaps(network):
            raise InvalidInput(f"{net.ipv4} overlaps {what} {network}: a managed network "
                               "must not cover the addresses the cluster itself runs on")


def check_domain(domain: str) -> str:
    d = domain.strip().lower().rstrip(".")
    if not d or len(d) > 253:
        raise InvalidInput(f"--domain {domain!r}: give a DNS domain such as sandbox.pvc")
    bad = next((label for label in d.split(".") if not _LABEL.match(label)), None)
    if bad is not None:
        raise InvalidInput(f"--domain {domain!r}: label {bad!r} is not letters, digits and "
                           "inner hyphens (at most 63)")
    if d == "local" or d.endswith(".local"):
        raise InvalidInput(f"--domain {domain!r}: .local is reserved for multicast DNS")
    return d


def _subnet(cidr: str) -> ipaddress.IPv4Network:
    if "/" not in cidr:
        raise InvalidInput(f"--ipv4 {cidr!r}: give the prefix length (e.g. 10.100.0.0/24)")
    try:
        subnet = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError as e:
        hint = ""
        try:
            hint = f" (the network is {ipaddress.IPv4Network(cidr, strict=False)})"
        except ValueError:
            pass
        raise InvalidInput(f"--ipv4 {cidr!r}: {e}{hint}") from None
    if not PREFIX_MIN <= subnet.prefixlen <= PREFIX_MAX:
        raise InvalidInput(f"--ipv4 {cidr}: the prefix length must be {PREFIX_MIN}-{PREFIX_MAX}")
    return subnet


def _address_in(option: str, text: str, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidInput(f"{option} {text!r} is not an IPv4 address") from None
    if address not in subnet:
        raise InvalidInput(f"{option} {address} is outside {subnet}")
    if address in (subnet.network_address, subnet.broadcast_address):
        raise InvalidInput(f"{option} {address} is {subnet}'s network or broadcast address")
    return address


# ---------------------------------------------------------------------- in the cluster

def all_networks(cluster: Cluster) -> list[ManagedNetwork]:
    out = []
    for child in cluster.store.children(cluster.schema.networks):
        data = cluster.store.get_json(cluster.schema.network(int(child)), None)
        if data:
            out.append(ManagedNetwork.from_json(data))
    return sorted(out, key=lambda n: n.vni)


def get(cluster: Cluster, vni: int) -> ManagedNetwork:
    data = cluster.store.get_json(cluster.schema.network(vni), None)
    if not data:
        raise NotFound(f"no managed network {vni} (pvc network list)")
    return ManagedNetwork.from_json(data)


def users(cluster: Cluster, vni: int) -> list[str]:
    """UUIDs of the VMs on the network."""
    try:
        return cluster.store.children(cluster.schema.network_users(vni))
    except NoNode:
        return []


def add(cluster: Cluster, net: ManagedNetwork) -> ManagedNetwork:
    net = check(net, all_networks(cluster))
    refuse_underlay(net, underlay(cluster))
    s = cluster.schema
    tx = cluster.store.transaction()
    tx.create(s.network(net.vni), net.to_json(),
              refuse={NodeExists: Conflict(f"network {net.vni} exists already")})
    tx.create(s.network_users(net.vni))
    tx.create(s.network_leases(net.vni))
    tx.commit()
    return net


def remove(cluster: Cluster, vni: int) -> ManagedNetwork:
    """Remove a network no VM uses (its leases go with it)."""
    net = get(cluster, vni)
    s = cluster.schema
    on_it = users(cluster, vni)
    if on_it:
        names = sorted(vm.name for vm in cluster.vms() if vm.uuid in on_it) or on_it
        raise Conflict(f"network {vni} is used by {len(names)} VM(s): {', '.join(names)}; "
                       "undefine them or change their interfaces first")
    tx = cluster.store.transaction()
    for mac in cluster.store.children(s.network_leases(vni)):
        tx.delete(s.network_lease(vni, mac))
    tx.delete(s.network_leases(vni))
    tx.delete(s.network_users(vni))
    tx.delete(s.network(vni))
    changed = Conflict(f"network {vni} changed while removing it (a VM joined, a lease "
                       "came); nothing was removed, try again")
    tx.commit(refuse={Conflict: changed, NoNode: changed})   # not empty, gone, or created
    return net


# ---------------------------------------------------------------------- leases

@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str = ""
    expiry: float = 0.0        # epoch seconds (0: never)
    clientid: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def leasefile_line(self) -> str:
        """dnsmasq's lease database format."""
        return (f"{int(self.expiry)} {self.mac} {self.ip} {self.hostname or '*'} "
                f"{self.clientid or '*'}")


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def leases(cluster: Cluster, vni: int) -> list[Lease]:
    s = cluster.schema
    get(cluster, vni)   # says so when there is no such network
    try:
        macs = cluster.store.children(s.network_leases(vni))
    except NoNode:
        macs = []
    out = []
    for mac in macs:
        data = cluster.store.get_json(s.network_lease(vni, mac), None)
        if data:
            out.append(Lease(**{k: v for k, v in data.items()
                                if k in Lease.__dataclass_fields__}))
    return sorted(out, key=lambda lease: ipaddress.IPv4Address(lease.ip))


def record_lease(cluster: Cluster, vni: int, lease: Lease) -> None:
    """A lease granted or renewed (dnsmasq's `add`/`old`)."""
    if not _MAC.match(lease.mac):
        raise InvalidInput(f"not a MAC address: {lease.mac!r}")
    path = cluster.schema.network_lease(vni, lease.mac)
    try:
        cluster.store.set(path, lease.to_json())
    except NoNode:
        try:
            cluster.store.create(path, lease.to_json())   # not makepath: a removed
        except NoNode:                                     # network stays removed
            pass
        except NodeExists:
            cluster.store.set(path, lease.to_json())


def forget_lease(cluster: Cluster, vni: int, mac: str) -> None:
    """A lease released or expired (dnsmasq's `del`)."""
    try:
        cluster.store.delete(cluster.schema.network_lease(vni, mac))
    except NoNode:
        pass
