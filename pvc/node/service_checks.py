"""Do the services around pvc on this coordinator serve? Its Patroni member's REST API, its
PowerDNS, and (while it is the primary) the dnsmasq of every managed network. Each problem is a
sentence with what to do; the daemon publishes them with its node (written on change only), and
`cluster status` turns them into DEGRADED reasons (pvc.core.health)."""
from __future__ import annotations

from pvc.coordinator.patroni import Patroni
from pvc.core.config import Config
from pvc.node import dns
from pvc.node.gateways import Gateways

PROBE_TIMEOUT = 0.5   # seconds: a probe must not hold up the next keepalive


def problems(config: Config, gateways: Gateways | None) -> dict[str, str]:
    """What does not serve here, by service ({} when everything does)."""
    cluster, node = config.cluster, config.node
    address = node.cluster_address or node.migration_address
    found = {}
    if cluster.database.enabled and address:
        url = f"http://{address}:{cluster.database.patroni_port}"
        if not Patroni([url], PROBE_TIMEOUT).answers():
            found["patroni"] = (f"Patroni's REST API does not answer on {address}:"
                                f"{cluster.database.patroni_port}: check its Patroni service "
                                "(a member that does not answer cannot take over the database)")
    if cluster.dns.enabled and address and not dns.answers(address, cluster.dns.port,
                                                           PROBE_TIMEOUT):
        found["powerdns"] = (f"PowerDNS does not answer on {address}:{cluster.dns.port}: check "
                             "its PowerDNS service and the database it reads")
    for vni, why in (gateways.not_serving() if gateways is not None else {}).items():
        found[f"dnsmasq-{vni}"] = (f"network {vni} has no DHCP or DNS on the primary: {why}")
    return found
