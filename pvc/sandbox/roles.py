"""Who holds what among a sandbox's coordinators: the ZooKeeper ensemble's leader and the
broker's master (as its members and Sentinels say), and a way to move the broker's master
where a fault test or a benchmark wants it (the same Sentinel failover an operator runs)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from pvc.core import redis_client, zookeeper
from pvc.core.config import load as load_config
from pvc.sandbox import procs

if TYPE_CHECKING:
    from pvc.sandbox.sandbox import Layout

TIMEOUT = 60.0   # seconds a Sentinel failover may take


def coordinators(layout: "Layout", nodes: list[str]) -> list[str]:
    return nodes[:len(layout.zk_members(nodes))]


def address(layout: "Layout", nodes: list[str], node: str) -> str:
    return layout.net.node_address(nodes.index(node) + 1)


def zookeeper_leader(layout: "Layout", nodes: list[str]) -> str:
    """The coordinator whose member leads the ensemble ("" while none does)."""
    return next((n for n in coordinators(layout, nodes)
                 if zookeeper.member_mode(address(layout, nodes, n), layout.zk_port)
                 == "leader"), "")


def redis_master_node(layout: "Layout", nodes: list[str]) -> str:
    """The coordinator whose Redis the Sentinels name the master ("" while none)."""
    found = redis_client.status(load_config(layout.client_config)).get("master", "")
    host = str(found).rsplit(":", 1)[0]
    return next((n for n in nodes if address(layout, nodes, n) == host), "")


def make_redis_master(layout: "Layout", nodes: list[str], node: str) -> None:
    """A Sentinel failover to node's Redis (the other replicas unfit meanwhile: priority 0),
    unless it is the master already."""
    master = redis_master_node(layout, nodes)
    if master == node:
        return
    password = layout.secret("redis.password").read_text().strip()

    def client(n: str, port: int) -> redis.Redis:
        return redis.Redis(address(layout, nodes, n), port, password=password,
                           socket_timeout=3, socket_connect_timeout=3)
    others = [n for n in coordinators(layout, nodes) if n not in (node, master)]
    try:
        for n in others:
            client(n, layout.redis_port).config_set("replica-priority", 0)
        name = load_config(layout.client_config).cluster.redis.master_name
        client(node, layout.sentinel_port).execute_command("SENTINEL", "FAILOVER", name)
        procs.wait_until(f"{node}'s Redis the master",
                         lambda: redis_master_node(layout, nodes) == node, TIMEOUT)
    finally:
        for n in others:
            client(n, layout.redis_port).config_set("replica-priority", 100)
