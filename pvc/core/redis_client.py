"""pvc's own Redis clients (the broker lease, the primary's sweep, `cluster status`): the
master, found through the Sentinels when the cluster has them (redis-py's Sentinel support,
which asks the next Sentinel when one does not answer), else at cluster.redis.host:port.
Celery reaches the broker through kombu's Sentinel transport with the same settings
(tasks.app.settings)."""
from __future__ import annotations

import socket
from typing import Any

import redis
from redis.sentinel import Sentinel

from pvc.core.config import Config

TIMEOUT = 3.0   # seconds a Redis or Sentinel call may take
# seconds a connection may take: on a cluster's network one takes a millisecond, and a member
# that is powered off never answers (each client tries the Sentinels in their order)
CONNECT_TIMEOUT = 1.0
# A master powered off or cut off sends no reset: without these a connection to it (a
# worker's idle BRPOP above all) waits for the kernel's two hours. With them the kernel
# ends it after about 5 s of silence, and the client asks the Sentinels for the new master.
KEEPALIVE: dict[int, int] = {socket.TCP_KEEPIDLE: 2, socket.TCP_KEEPINTVL: 1,
                             socket.TCP_KEEPCNT: 3, socket.TCP_USER_TIMEOUT: 5000}
# No retries inside redis-py (since redis-py 6 it retries 3 times with back-off by default:
# one call to a powered-off Sentinel took 13 s instead of its 1 s connect timeout, and every
# client asks the Sentinels in order). pvc's callers retry where they must.
NO_RETRY: dict[str, Any] = {"retry": None}
# How every client talks to a Sentinel.
SENTINEL_CONNECTION: dict[str, Any] = {"socket_timeout": TIMEOUT,
                                       "socket_connect_timeout": CONNECT_TIMEOUT, **NO_RETRY}
CONNECTION: dict[str, Any] = {"socket_timeout": TIMEOUT,
                              "socket_connect_timeout": CONNECT_TIMEOUT,
                              "socket_keepalive": True, "socket_keepalive_options": KEEPALIVE,
                              **NO_RETRY}


def sentinel_hosts(cfg: Config) -> list[tuple[str, int]]:
    out = []
    for item in cfg.cluster.redis.sentinels.split(","):
        if item.strip():
            host, _, port = item.strip().rpartition(":")
            out.append((host, int(port)))
    return out


def sentinel(cfg: Config) -> Sentinel:
    password = cfg.redis_password() or None
    return Sentinel(sentinel_hosts(cfg), **CONNECTION,
                    sentinel_kwargs={"password": password, **SENTINEL_CONNECTION})


def master(cfg: Config, db: int) -> Any:
    """A client of the current master (it follows a failover: a new connection asks the
    Sentinels again)."""
    r = cfg.cluster.redis
    password = cfg.redis_password() or None
    if r.sentinels:
        return sentinel(cfg).master_for(r.master_name, db=db, password=password,
                                        **CONNECTION)
    return redis.Redis(host=r.host, port=r.port, db=db, password=password, **CONNECTION)


def where(cfg: Config) -> str:
    """Where the broker is, for messages: its master's name or address."""
    r = cfg.cluster.redis
    return f"(master {r.master_name!r} of the Sentinels {r.sentinels})" if r.sentinels \
        else f"at {r.host}:{r.port}"


def status(cfg: Config) -> dict[str, Any]:
    """The broker as `cluster status` shows it: master, replicas, Sentinels (each up or
    not); "problems" holds what makes the cluster degraded."""
    r = cfg.cluster.redis
    if not r.sentinels:
        return {}
    problems: list[str] = []
    sentinels = {}
    master_addr = ""
    replicas: list[dict[str, Any]] = []
    for host, port in sentinel_hosts(cfg):
        client = redis.Redis(host=host, port=port, password=cfg.redis_password() or None,
                             decode_responses=True, **SENTINEL_CONNECTION)
        try:
            found = client.sentinel_get_master_addr_by_name(r.master_name)
            sentinels[f"{host}:{port}"] = "up"
            if isinstance(found, tuple) and not master_addr:
                host_of_master = found[0].decode() if isinstance(found[0], bytes) else found[0]
                master_addr = f"{host_of_master}:{found[1]}"
                replicas = [{"address": f"{s['ip']}:{s['port']}",
                             "state": "down" if ("s_down" in s["flags"] or
                                                 "o_down" in s["flags"]) else "up"}
                            for s in client.sentinel_slaves(r.master_name)]
        except redis.RedisError as e:
            sentinels[f"{host}:{port}"] = f"down ({e})"
            problems.append(f"broker: Sentinel {host}:{port} does not answer")
        finally:
            client.close()
    if not master_addr:
        problems.append(f"broker: no Sentinel knows a master {r.master_name!r}")
    problems += [f"broker: replica {rep['address']} is down" for rep in replicas
                 if rep["state"] != "up"]
    return {"master": master_addr, "replicas": replicas, "sentinels": sentinels,
            "problems": problems}
