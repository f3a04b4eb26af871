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


def nodes_of(layout: "Layout") -> list[str]:
    """The sandbox's nodes in its own order (node i has the cluster address .i)."""
    from pvc.sandbox.sandbox import State
    state = State.load(layout)
    return state.nodes if state is not None else []


def coordinators(layout: "Layout") -> list[str]:
    nodes = nodes_of(layout)
    return nodes[:len(layout.zk_members(nodes))]


def address(layout: "Layout", node: str) -> str:
    return layout.net.node_address(nodes_of(layout).index(node) + 1)


def zookeeper_leader(layout: "Layout") -> str:
    """The coordinator whose member leads the ensemble ("" while none does)."""
    return next((n for n in coordinators(layout)
                 if zookeeper.member_mode(address(layout, n), layout.zk_port) == "leader"),
                "")


def redis_master_node(layout: "Layout") -> str:
    """The coordinator whose Redis the Sentinels name the master ("" while none)."""
    found = redis_client.status(load_config(layout.client_config)).get("master", "")
    host = str(found).rsplit(":", 1)[0]
    return next((n for n in nodes_of(layout) if address(layout, n) == host), "")


def make_redis_master(layout: "Layout", node: str) -> None:
    """A Sentinel failover to node's Redis, unless it is the master already. The other
    replicas are made unfit meanwhile (priority 0), once the Sentinel that leads the
    failover has read their new priority (it reads a replica's INFO every 10 s); it returns
    once every Sentinel has read them fit again."""
    master = redis_master_node(layout)
    if master == node:
        return
    password = layout.secret("redis.password").read_text().strip()
    name = load_config(layout.client_config).cluster.redis.master_name

    def client(n: str, port: int) -> redis.Redis:
        return redis.Redis(address(layout, n), port, password=password,
                           socket_timeout=3, socket_connect_timeout=3)
    sentinel = client(node, layout.sentinel_port)
    others = {f"{address(layout, n)}:{layout.redis_port}"
              for n in coordinators(layout) if n not in (node, master)}

    def priorities_seen(sentinel: redis.Redis, priority: int) -> bool:
        return all(r.get("slave-priority") == priority for r in sentinel.sentinel_slaves(name)
                   if f"{r['ip']}:{r['port']}" in others)
    try:
        for other in others:
            host, port = other.rsplit(":", 1)
            redis.Redis(host, int(port), password=password, socket_timeout=3).config_set(
                "replica-priority", 0)
        procs.wait_until("the Sentinel to read the replicas' priority",
                         lambda: priorities_seen(sentinel, 0), TIMEOUT)
        sentinel.execute_command("SENTINEL", "FAILOVER", name)
        procs.wait_until(f"{node}'s Redis the master",
                         lambda: redis_master_node(layout) == node, TIMEOUT)
    finally:
        for other in others:
            host, port = other.rsplit(":", 1)
            redis.Redis(host, int(port), password=password, socket_timeout=3).config_set(
                "replica-priority", 100)
    # A Sentinel that still believes the replicas unfit would find none to promote if the
    # new master died now, and would try again only after twice its failover timeout.
    for n in coordinators(layout):
        watcher = client(n, layout.sentinel_port)
        procs.wait_until(f"{n}'s Sentinel to read the replicas' priority again",
                         lambda: priorities_seen(watcher, 100), TIMEOUT)


def control_plane(layout: "Layout") -> dict[str, dict[str, str]]:
    """What each coordinator's members are: its ZooKeeper member's mode (leader, follower,
    down…), its Redis's role as the Sentinels see it (master, replica, replica down)."""
    broker = redis_client.status(load_config(layout.client_config))
    redis_role = {broker.get("master", ""): "master"} | {
        r["address"]: "replica" if r["state"] == "up" else "replica down"
        for r in broker.get("replicas", [])}
    out = {}
    for n in coordinators(layout):
        at = address(layout, n)
        out[n] = {"zookeeper": zookeeper.member_mode(at, layout.zk_port, 0.5),
                  "redis": redis_role.get(f"{at}:{layout.redis_port}", "unknown")}
    return out
