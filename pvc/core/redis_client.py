"""pvc's own Redis clients (the broker lease, the primary's sweep, `cluster status`): the
master, found through the Sentinels when the cluster has them (redis-py's Sentinel support,
which asks the next Sentinel when one does not answer), else at cluster.redis.host:port.
Celery reaches the broker through kombu's Sentinel transport with the same settings
(tasks.app.settings)."""
from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, BinaryIO, Sequence

from pvc.core.config import Config

if TYPE_CHECKING:
    from redis.sentinel import Sentinel

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


def sentinel(cfg: Config) -> "Sentinel":
    from redis.sentinel import Sentinel
    password = cfg.redis_password() or None
    return Sentinel(sentinel_hosts(cfg), **CONNECTION,
                    sentinel_kwargs={"password": password, **SENTINEL_CONNECTION})


def master(cfg: Config, db: int) -> Any:
    """A client of the current master (it follows a failover: a new connection asks the
    Sentinels again)."""
    import redis
    r = cfg.cluster.redis
    password = cfg.redis_password() or None
    if r.sentinels:
        return sentinel(cfg).master_for(r.master_name, db=db, password=password,
                                        **CONNECTION)
    return redis.Redis(host=r.host, port=r.port, db=db, password=password, **CONNECTION)


_answered: dict[str, tuple[str, int]] = {}   # Sentinels -> the one that answered last


def master_address(cfg: Config) -> tuple[str, int]:
    """Where the master is now: asked of the Sentinels (the one that answered last first:
    one powered off costs each question its connect timeout), else cluster.redis.host:port."""
    r = cfg.cluster.redis
    if not r.sentinels:
        return r.host, r.port
    hosts = sentinel_hosts(cfg)
    last = _answered.get(r.sentinels)
    for host, port in ([last] if last in hosts else []) + [h for h in hosts if h != last]:
        try:
            (found,) = ask(host, port, cfg.redis_password(),
                           ["SENTINEL", "get-master-addr-by-name", r.master_name])
        except (OSError, ReplyError):
            continue
        if found:
            _answered[r.sentinels] = (host, port)
            return found[0], int(found[1])
    raise ConnectionError(f"no Sentinel knows a master {r.master_name!r}")


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
        try:
            found, found_replicas = ask(
                host, port, cfg.redis_password(),
                ["SENTINEL", "get-master-addr-by-name", r.master_name],
                ["SENTINEL", "replicas", r.master_name])
            sentinels[f"{host}:{port}"] = "up"
            if found and not master_addr:
                master_addr = f"{found[0]}:{found[1]}"
                replicas = [_replica(dict(zip(s[::2], s[1::2]))) for s in found_replicas]
        except (OSError, ReplyError) as e:
            sentinels[f"{host}:{port}"] = f"down ({e})"
            problems.append(f"broker: Sentinel {host}:{port} does not answer")
    if not master_addr:
        problems.append(f"broker: no Sentinel knows a master {r.master_name!r}")
    problems += [f"broker: replica {rep['address']} is down" for rep in replicas
                 if rep["state"] != "up"]
    return {"master": master_addr, "replicas": replicas, "sentinels": sentinels,
            "problems": problems}


def _replica(fields: dict[str, Any]) -> dict[str, str]:
    flags = str(fields.get("flags", "")).split(",")
    return {"address": f"{fields.get('ip')}:{fields.get('port')}",
            "state": "down" if "s_down" in flags or "o_down" in flags else "up"}


# ------------------------------------------------------------------ a Sentinel's answers
class ReplyError(Exception):
    """A server answered with an error (a wrong password, an unknown command, READONLY)."""


def ask(host: str, port: int, password: str, *commands: Sequence[str | bytes]) -> list[Any]:
    """Each command's reply from one Redis server or Sentinel, over RESP2 on a plain socket.
    For the CLI's few questions (`cluster status` asks each Sentinel two, a submission
    pushes one message): importing redis-py (which imports asyncio) cost a command 55 to
    90 ms, more than the rest of it."""
    sent: list[Sequence[str | bytes]] = [["AUTH", password]] if password else []
    sent += commands
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as conn:
        conn.settimeout(TIMEOUT)
        conn.sendall(b"".join(_command(c) for c in sent))
        with conn.makefile("rb") as reader:
            replies = [_reply(reader) for _ in sent]
    return replies[1:] if password else replies


def _command(words: Sequence[str | bytes]) -> bytes:
    out = [f"*{len(words)}\r\n".encode()]
    for w in words:
        data = w.encode() if isinstance(w, str) else w
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _reply(reader: BinaryIO) -> Any:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the connection closed in the middle of a reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise ReplyError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = reader.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("the connection closed in the middle of a reply")
        return data[:-2].decode()
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_reply(reader) for _ in range(count)]
    raise ReplyError(f"not a RESP reply: {line[:40]!r}")
