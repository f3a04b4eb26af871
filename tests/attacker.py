"""What a stranger on the cluster network tries, run inside the sandbox's client namespace
(`python -m tests.attacker zookeeper|patroni ADDRESS`); prints what each attempt got, as JSON.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any, Callable

# Patroni's writes: each would let a stranger move the database or (PATCH /config with an
# archive_command, then a restart) run code as postgres on a coordinator.
PATRONI_WRITES = [("POST", "/restart", {}), ("POST", "/switchover", {"leader": "hv1"}),
                  ("POST", "/failover", {"candidate": "hv2"}), ("POST", "/reinitialize", {}),
                  ("PATCH", "/config", {"postgresql": {"parameters": {
                      "archive_command": "touch /tmp/pvc-attacker-was-here"}}})]


def zookeeper(hosts: str) -> dict[str, str]:
    from kazoo.client import KazooClient
    zk = KazooClient(hosts=hosts, timeout=2)
    try:
        zk.start(timeout=5)
    except Exception as e:   # refused before any request: as good as it gets
        return {"start": type(e).__name__}
    attempts: dict[str, Callable[[], Any]] = {
        "read /service": lambda: zk.get_children("/service"),
        "write a failover key": lambda: zk.create("/service/pvc/failover", b"{}",
                                                  makepath=True),
        "create at /": lambda: zk.create("/intruder", b"x"),
        "create under /zookeeper": lambda: zk.create("/zookeeper/intruder", b"x"),
    }
    out = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            out[name] = "allowed"
        except Exception as e:
            out[name] = type(e).__name__
    zk.stop()
    zk.close()
    return out


def patroni(base_url: str) -> dict[str, int]:
    out = {}
    for method, path, body in PATRONI_WRITES:
        req = urllib.request.Request(base_url + path, method=method,
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                out[f"{method} {path}"] = r.status
        except urllib.error.HTTPError as e:
            out[f"{method} {path}"] = e.code
    return out


if __name__ == "__main__":
    what, target = sys.argv[1], sys.argv[2]
    print(json.dumps(zookeeper(target) if what == "zookeeper" else patroni(target)))
