"""dnsmasq's --dhcp-script for a managed network: records its leases in ZooKeeper, so they
survive dnsmasq moving to a new primary (its `init` reads them back).

    lease_hook --config FILE --vni N (add|old|del) MAC IP [HOSTNAME]
    lease_hook --config FILE --vni N init          (prints the lease database)
dnsmasq gives the expiry in $DNSMASQ_LEASE_EXPIRES and the client id in $DNSMASQ_CLIENT_ID.
"""
from __future__ import annotations

import argparse
import os
import sys

from pvc.core import config as configmod
from pvc.core.cluster import Cluster
from pvc.core.errors import PvcError
from pvc.network import managed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pvc-lease-hook")
    parser.add_argument("--config", required=True)
    parser.add_argument("--vni", type=int, required=True)
    parser.add_argument("action")
    parser.add_argument("args", nargs="*")
    a = parser.parse_args(argv)
    try:
        cluster = Cluster.connect(configmod.load(a.config))
    except PvcError as e:
        print(f"pvc lease hook: {e}", file=sys.stderr)
        sys.exit(1)
    try:
        if a.action == "init":
            for lease in managed.leases(cluster, a.vni):
                print(lease.leasefile_line())
        elif a.action in ("add", "old") and len(a.args) >= 2:
            mac, ip = a.args[0].lower(), a.args[1]
            hostname = a.args[2] if len(a.args) > 2 else os.environ.get("DNSMASQ_SUPPLIED_HOSTNAME", "")
            managed.record_lease(cluster, a.vni, managed.Lease(
                mac, ip, hostname, float(os.environ.get("DNSMASQ_LEASE_EXPIRES", "0") or 0),
                os.environ.get("DNSMASQ_CLIENT_ID", "")))
        elif a.action == "del" and a.args:
            managed.forget_lease(cluster, a.vni, a.args[0].lower())
    except PvcError as e:
        print(f"pvc lease hook: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        cluster.close()


if __name__ == "__main__":
    main()
