"""Managed networks: validation (pure), and their life in the cluster on the in-memory store
(VMs join them through their bridge; a network in use cannot be removed; placement keeps VMs on
a network to nodes with networking)."""
from __future__ import annotations

import ipaddress
from typing import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvc.core.errors import Conflict, InvalidInput, NotFound
from pvc.network import managed
from pvc.network.managed import ManagedNetwork
from pvc.vm import definition, placement
from tests.fakes.cluster import FakeCluster

GOOD = ManagedNetwork(100, "sandbox.pvc", "10.100.0.0/24", "10.100.0.1", "10.100.0.100",
                      "10.100.0.199", "demo")


def net(**change: object) -> ManagedNetwork:
    return ManagedNetwork(**{**GOOD.to_json(), **change})   # type: ignore[arg-type]


def test_a_good_network_is_stored_normalised() -> None:
    n = managed.check(net(domain="Sandbox.PVC."), [])
    assert (n.domain, n.bridge, n.vxlan, n.gateway_cidr) == ("sandbox.pvc", "vmbr100",
                                                             "vxlan100", "10.100.0.1/24")


@pytest.mark.parametrize("change,said", [
    ({"vni": 0}, "VNI 0 is out of range"),
    ({"vni": 2 ** 24}, "out of range"),
    ({"domain": "bad_domain.pvc"}, "label 'bad_domain'"),
    ({"domain": "printer.local"}, "multicast DNS"),
    ({"domain": ""}, "give a DNS domain"),
    ({"ipv4": "10.100.0.1/24"}, "has host bits set (the network is 10.100.0.0/24)"),
    ({"ipv4": "10.100.0.0"}, "give the prefix length"),
    ({"ipv4": "10.100.0.0/30"}, "prefix length must be 8-29"),
    ({"gateway": "10.101.0.1"}, "--gateway 10.101.0.1 is outside 10.100.0.0/24"),
    ({"gateway": "10.100.0.255"}, "broadcast"),
    ({"gateway": "gw"}, "not an IPv4 address"),
    ({"gateway": "10.100.0.150"}, "inside the DHCP range"),
    ({"dhcp_end": ""}, "give both --dhcp-start and --dhcp-end"),
    ({"dhcp_start": "10.100.0.200"}, "is after --dhcp-end"),
    ({"dhcp_end": "10.100.1.5"}, "outside"),
])
def test_bad_networks_are_refused_in_one_line(change: dict, said: str) -> None:
    with pytest.raises(InvalidInput) as e:
        managed.check(net(**change), [])
    assert said in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("other,said", [
    (net(domain="x.pvc", ipv4="10.200.0.0/16", gateway="10.200.0.1", dhcp_start="",
         dhcp_end=""), "exists already"),
    (net(vni=7, domain="x.pvc", ipv4="10.100.0.0/16", gateway="10.100.200.1", dhcp_start="",
         dhcp_end=""), "overlaps network 7"),
    (net(vni=8, ipv4="10.9.0.0/24", gateway="10.9.0.1", dhcp_start="", dhcp_end=""),
     "already serves the domain sandbox.pvc"),
])
def test_conflicts_with_other_networks(other: ManagedNetwork, said: str) -> None:
    with pytest.raises(InvalidInput) as e:
        managed.check(GOOD, [other])
    assert said in str(e.value)


@given(vni=st.integers(), domain=st.text(max_size=40), ipv4=st.text(max_size=25),
       gateway=st.text(max_size=20))
def test_any_input_is_stored_valid_or_refused_in_one_line(vni: int, domain: str, ipv4: str,
                                                          gateway: str) -> None:
    try:
        n = managed.check(ManagedNetwork(vni, domain, ipv4, gateway), [])
    except InvalidInput as e:
        assert "\n" not in str(e)
        return
    assert managed.PREFIX_MIN <= n.subnet.prefixlen <= managed.PREFIX_MAX
    assert ipaddress.IPv4Address(n.gateway) in n.subnet


# ---------------------------------------------------------------------- in the cluster

@pytest.fixture
def fc() -> Iterator[FakeCluster]:
    c = FakeCluster(nodes=2)
    yield c
    c.stop()


def xml_on(name: str, bridge: str) -> str:
    return (f"<domain type='test'><name>{name}</name><memory unit='MiB'>64</memory>"
            f"<vcpu>1</vcpu><devices><interface type='bridge'><source bridge='{bridge}'/>"
            "</interface></devices></domain>")


def test_a_vm_joins_a_network_through_its_bridge_and_keeps_it(fc: FakeCluster) -> None:
    managed.add(fc.client, GOOD)
    vm = definition.define(fc.client, xml_on("web", "vmbr100"))
    assert vm.networks == [100]
    assert managed.users(fc.client, 100) == [vm.uuid]
    with pytest.raises(Conflict, match="network 100 is used by 1 VM"):
        managed.remove(fc.client, 100)
    definition.undefine(fc.client, "web")
    assert managed.users(fc.client, 100) == []
    assert managed.remove(fc.client, 100).vni == 100
    assert managed.all_networks(fc.client) == []


def test_a_vm_on_a_network_that_does_not_exist_is_refused(fc: FakeCluster) -> None:
    with pytest.raises(NotFound, match="no managed network 42"):
        definition.define(fc.client, xml_on("web", "vmbr42"))
    definition.define(fc.client, xml_on("other", "br-lan"))   # not a managed network's


def test_adding_twice_and_removing_nothing(fc: FakeCluster) -> None:
    managed.add(fc.client, GOOD)
    with pytest.raises(InvalidInput, match="exists already"):
        managed.add(fc.client, GOOD)
    with pytest.raises(NotFound, match="no managed network 5"):
        managed.remove(fc.client, 5)


def test_placement_keeps_a_vm_on_a_network_to_nodes_with_networking(fc: FakeCluster) -> None:
    managed.add(fc.client, GOOD)
    vm = definition.define(fc.client, xml_on("web", "vmbr100"))
    nodes = fc.client.nodes()
    assert all(not n.enable_networking for n in nodes)
    assert placement.choose(vm, nodes, "mem") is None
    assert "networking disabled (the VM is on network 100)" in \
        placement.why_none(vm, nodes, placement.Plan())
    nodes[1].enable_networking = True
    assert placement.choose(vm, nodes, "mem").name == nodes[1].name


def test_a_network_over_the_cluster_network_is_refused(fc: FakeCluster) -> None:
    from dataclasses import replace

    from pvc.core.config import Config
    on_underlay = fc.cluster(Config(cluster=replace(fc.cluster_config,
                                                    floating_ip="10.100.0.250/16")))
    with pytest.raises(InvalidInput, match="overlaps the cluster network 10.100.0.0/16"):
        managed.add(on_underlay, GOOD)
    assert managed.all_networks(fc.client) == []


def test_a_network_over_a_nodes_address_is_refused() -> None:
    taken = [("node hv2's address", ipaddress.IPv4Network("10.100.0.7/32"))]
    with pytest.raises(InvalidInput, match="overlaps node hv2's address 10.100.0.7/32"):
        managed.refuse_underlay(GOOD, taken)
    managed.refuse_underlay(net(ipv4="10.101.0.0/24", gateway="10.101.0.1", dhcp_start="",
                                dhcp_end=""), taken)
