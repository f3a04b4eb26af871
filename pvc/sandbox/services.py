"""The servers a pvc cluster needs, started on 127.0.0.1 from Debian's packages: ZooKeeper,
Redis (with a password), a libvirtd per node (each in its own mount namespace, so several run
on one machine and can live-migrate between each other) and Flower (with basic auth).

Used by the sandbox and by the test suite's fixtures: the same code starts both.
"""
from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from pvc.coordinator import postgres
from pvc.install.installer import flower_config
from pvc.sandbox import procs

ZOOKEEPER_CLASSPATH = ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-log4j12.jar",
                       "/usr/share/java/log4j-1.2.jar"]
CAPS_SEED = Path(os.environ.get("PVC_LIBVIRT_CAPS_SEED", "/var/cache/pvc/libvirt-caps"))
LIBVIRT_OVERMOUNTS = {"run": "/run/libvirt", "varlib": "/var/lib/libvirt",
                      "cache": "/var/cache/libvirt", "log": "/var/log/libvirt",
                      "etc": "/etc/libvirt"}


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one long-lived process: started directly (tests) or by the supervisor
    (the sandbox), from the same description."""
    name: str
    command: list[str]
    log: Path
    env: dict[str, str] | None = None      # added to the environment it inherits
    cwd: Path | None = None
    private: bool = False                  # what it writes is its own (umask 077): a server
                                           # that rewrites a file holding a password


def spawn(spec: ProcessSpec) -> int:
    env = {**os.environ, **spec.env} if spec.env else None
    return procs.spawn(spec.command, spec.log, env=env, cwd=spec.cwd)


def new_password() -> str:
    return secrets.token_urlsafe(18)


def write_secret(path: Path, value: str | None = None) -> str:
    """A secret file only its owner can read; its content."""
    value = value or new_password()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


# ------------------------------------------------------------------------------ ZooKeeper

def start_zookeeper(base: Path, port: int, users: dict[str, str]) -> int:
    if not procs.port_free(port):
        raise procs.StartFailed(f"port {port} (ZooKeeper) is already in use")
    spec = zookeeper_spec(base, port, users)
    pid = spawn(spec)
    wait_zookeeper(port, pid, spec.log)
    return pid


def wait_zookeeper(port: int, pid: int | None, log: Path, host: str = "127.0.0.1",
                   timeout: float = 30) -> None:
    """Until the server serves (standalone, or in an ensemble with a quorum)."""
    procs.wait_until(f"ZooKeeper on {host}:{port}", lambda: zk_serving(port, host), timeout,
                     pid, log)


# ZooKeeper's heap and its largest znode: a console buffer is capped well below jute.maxbuffer
# (1 MiB here), and the heap has room for many of them being written at once.
ZOOKEEPER_HEAP_MB = 256
JUTE_MAXBUFFER = 1024 * 1024
# The four-letter words pvc and its health checks use; `envi`, `conf`, `dump`, `wchc` … tell a
# stranger the server's paths, sessions and watched znodes.
FOUR_LETTER_WORDS = ("ruok", "srvr", "mntr")


def zookeeper_security(users: dict[str, str]) -> tuple[str, str]:
    """(zoo.cfg lines, JAAS file) of a ZooKeeper that refuses every session that has not
    logged in over SASL as one of users: an unauthenticated client can neither read nor
    write anything, whatever a znode's ACL says (Patroni's znodes have an open ACL)."""
    cfg = ("authProvider.1=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n"
           "enforce.auth.enabled=true\nenforce.auth.schemes=sasl\n"
           f"4lw.commands.whitelist={','.join(FOUR_LETTER_WORDS)}\n")
    entries = "".join(f'    user_{u}="{p}"\n' for u, p in users.items())
    jaas = ("Server {\n    org.apache.zookeeper.server.auth.DigestLoginModule required\n"
            f"{entries.rstrip()};\n}};\n")
    return cfg, jaas


QUORUM_PORT, ELECTION_PORT = 2888, 3888


def zookeeper_spec(base: Path, port: int, users: dict[str, str],
                   address: str = "127.0.0.1", ensemble: list[str] | None = None,
                   name: str = "zookeeper") -> ProcessSpec:
    """One ZooKeeper server: standalone, or the member at `address` of an ensemble (the
    members' addresses in order; its id is its place in the list, from 1)."""
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    (base / "log").mkdir(exist_ok=True)
    security, jaas = zookeeper_security(users)
    write_private(base / "jaas.conf", jaas)
    members = ""
    if ensemble and len(ensemble) > 1:
        (data / "myid").write_text(f"{ensemble.index(address) + 1}\n")
        members = "".join(f"server.{i}={a}:{QUORUM_PORT}:{ELECTION_PORT}\n"
                          for i, a in enumerate(ensemble, 1))
    (base / "zoo.cfg").write_text(
        "tickTime=500\ninitLimit=10\nsyncLimit=5\n"
        f"dataDir={data}\nclientPort={port}\nclientPortAddress={address}\n"
        "admin.enableServer=false\nmaxClientCnxns=0\n" + security + members +
        "minSessionTimeout=1000\nmaxSessionTimeout=30000\n")
    (base / "log4j.properties").write_text(
        "log4j.rootLogger=INFO, ROLLINGFILE\n"
        "log4j.appender.ROLLINGFILE=org.apache.log4j.RollingFileAppender\n"
        f"log4j.appender.ROLLINGFILE.File={base}/log/zookeeper.log\n"
        "log4j.appender.ROLLINGFILE.MaxFileSize=10MB\nlog4j.appender.ROLLINGFILE.MaxBackupIndex=2\n"
        "log4j.appender.ROLLINGFILE.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.ROLLINGFILE.layout.ConversionPattern=%d %p [%t] %c: %m%n\n")
    cmd = ["java", "-Xms64m", f"-Xmx{ZOOKEEPER_HEAP_MB}m", "-XX:+UseSerialGC",
           "-XX:TieredStopAtLevel=1", "-Xss512k", "-XX:MaxMetaspaceSize=64m",
           f"-Djute.maxbuffer={JUTE_MAXBUFFER}", f"-Dzookeeper.log.dir={base}/log",
           f"-Dlog4j.configuration=file:{base}/log4j.properties",
           f"-Djava.security.auth.login.config={base}/jaas.conf",
           "-Dzookeeper.jmx.log4j.disable=true",
           "-cp", ":".join([str(base)] + ZOOKEEPER_CLASSPATH),
           "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(base / "zoo.cfg")]
    return ProcessSpec(name, cmd, base / "stdout.log")


def zk_serving(port: int, host: str = "127.0.0.1") -> bool:
    """Whether the server serves requests (standalone, or a member with a quorum)."""
    from pvc.core import zookeeper
    return zookeeper.member_mode(host, port, 0.5) in zookeeper.SERVING_MODES


# ------------------------------------------------------------------------------ Redis

def start_redis(base: Path, port: int, password: str) -> int:
    if not procs.port_free(port):
        raise procs.StartFailed(f"port {port} (Redis) is already in use")
    pid = spawn(redis_spec(base, port, password))
    wait_redis(base, port, pid)
    return pid


def wait_redis(base: Path, port: int, pid: int | None, host: str = "127.0.0.1") -> None:
    procs.wait_until(f"Redis on {host}:{port}", lambda: procs.port_open(port, host), 15, pid,
                     base / "redis.log")


def redis_spec(base: Path, port: int, password: str,
               addresses: tuple[str, ...] = ("127.0.0.1",), replica_of: str = "",
               guarded: bool = False, name: str = "redis") -> ProcessSpec:
    """Redis with an append-only file written at every command: a queued operation's message
    survives a Redis restart (pvc's sweep re-sends what is lost anyway). replica_of: the
    master's address (this one replicates it; the Sentinels move the role). guarded: a
    master refuses writes while no replica follows it (min-replicas-to-write 1), so one cut
    off from the others fails a submission loudly instead of accepting a message the new
    master will never have."""
    base.mkdir(parents=True, exist_ok=True)
    conf = base / "redis.conf"
    text = (f"bind {' '.join(addresses)}\nport {port}\nprotected-mode yes\n"
            "save \"\"\n"
            "appendonly yes\nappendfsync always\n"
            f"dir {base}\nlogfile {base}/redis.log\nrequirepass {password}\n"
            f"masterauth {password}\nreplica-announce-ip {addresses[0]}\n"
            # a replica (re)joining is fed at once: a guarded master refuses writes until
            # one follows it, so Redis's default 5 s wait for more replicas is 5 s refused
            "repl-diskless-sync-delay 0\n")
    if replica_of:
        text += f"replicaof {replica_of} {port}\n"
    if guarded:
        text += "min-replicas-to-write 1\nmin-replicas-max-lag 10\n"
    write_private(conf, text)
    base.chmod(0o700)
    return ProcessSpec(name, ["redis-server", str(conf)], base / "stdout.log", private=True)


SENTINEL_MASTER = "pvc"


def sentinel_spec(base: Path, port: int, address: str, master: str, redis_port: int,
                  password: str, quorum: int, name: str) -> ProcessSpec:
    """A Redis Sentinel watching the master (down after 2 s, a quorum to fail over; a
    failover that found no leader or no replica is tried again after 2 × 5 s), with
    the Redis password for itself, the master and its peers. It rewrites its configuration
    as the master moves, so the file is its own."""
    base.mkdir(parents=True, exist_ok=True)
    conf = base / "sentinel.conf"
    write_private(conf, f"bind {address}\nport {port}\nprotected-mode yes\n"
                        f"dir {base}\nlogfile {base}/sentinel.log\n"
                        f"requirepass {password}\nsentinel announce-ip {address}\n"
                        f"sentinel monitor {SENTINEL_MASTER} {master} {redis_port} {quorum}\n"
                        f"sentinel auth-pass {SENTINEL_MASTER} {password}\n"
                        f"sentinel sentinel-pass {password}\n"
                        f"sentinel down-after-milliseconds {SENTINEL_MASTER} 2000\n"
                        f"sentinel failover-timeout {SENTINEL_MASTER} 5000\n"
                        f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n")
    base.chmod(0o700)
    return ProcessSpec(name, ["redis-server", str(conf), "--sentinel"], base / "stdout.log",
                       private=True)


# ------------------------------------------------------------------------------ libvirtd

@dataclass(frozen=True)
class Libvirtd:
    base: Path
    index: int               # 1-based: distinct host UUID and migration ports
    migration_ports: tuple[int, int]

    @property
    def socket(self) -> Path:
        return self.base / "sock" / "libvirt-sock"

    def uri(self, kind: str) -> str:
        scheme = "test+unix:///default" if kind == "test" else "qemu+unix:///system"
        return f"{scheme}?socket={self.socket}"

    @property
    def log(self) -> Path:
        return self.base / "libvirtd.log"

    @property
    def virtlogd_pidfile(self) -> Path:
        return self.base / "virtlogd.pid"


def start_libvirtd(lv: Libvirtd) -> int:
    return spawn(libvirtd_spec(lv))


def libvirtd_spec(lv: Libvirtd, name: str = "libvirtd") -> ProcessSpec:
    """A libvirtd (+ virtlogd) in a private mount namespace: its fixed paths under /run,
    /var/lib, /var/cache, /var/log and /etc are bind-mounted from lv.base, so several run side
    by side. QEMU runs as root (no /dev/kvm re-probing) with the node's own migration ports."""
    b = lv.base
    for sub in [*LIBVIRT_OVERMOUNTS, "sock", "varlib/qemu"]:
        (b / sub).mkdir(parents=True, exist_ok=True)
    if not (b / "etc" / "libvirtd.conf").exists():
        shutil.copytree("/etc/libvirt", b / "etc", dirs_exist_ok=True)
    if CAPS_SEED.is_dir():
        shutil.copytree(CAPS_SEED, b / "cache" / "qemu" / "capabilities", dirs_exist_ok=True)
    lo, hi = lv.migration_ports
    with open(b / "etc" / "qemu.conf", "a") as f:
        f.write(f'\n# pvc sandbox\nuser = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
                f"migration_port_min = {lo}\nmigration_port_max = {hi}\n")
    (b / "libvirtd.conf").write_text(
        f'unix_sock_dir = "{b}/sock"\nunix_sock_group = "root"\n'
        'unix_sock_rw_perms = "0770"\nunix_sock_ro_perms = "0770"\n'
        'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
        f'host_uuid = "00000000-0000-4000-8000-{lv.index:012d}"\n'
        f'log_outputs = "3:file:{lv.log}"\n')
    mounts = "\n".join(f"mount --bind {b}/{src} {dst}" for src, dst in LIBVIRT_OVERMOUNTS.items())
    script = b / "namespace.sh"
    script.write_text("#!/bin/sh\nset -e\n" + mounts + "\n"
                      f"/usr/sbin/virtlogd -d -p {lv.virtlogd_pidfile}\n"
                      f"exec /usr/sbin/libvirtd -f {b}/libvirtd.conf -p {b}/libvirtd.pid\n")
    script.chmod(0o700)
    for dst in LIBVIRT_OVERMOUNTS.values():
        Path(dst).mkdir(parents=True, exist_ok=True)
    return ProcessSpec(name, ["unshare", "--mount", "--propagation", "private", str(script)],
                       b / "stdout.log")


def wait_libvirtd(lv: Libvirtd, pid: int, kind: str, timeout: float = 60) -> float:
    from pvc.hypervisor import adapter
    return procs.wait_until(f"libvirtd of {lv.base.parent.name}",
                            lambda: adapter.ping(lv.uri(kind)), timeout, pid, lv.log)


def save_caps_seed(lv: Libvirtd) -> None:
    """Keep probed QEMU capabilities, so the next libvirtd starts in 0.2 s instead of ~10 s."""
    caps = lv.base / "cache" / "qemu" / "capabilities"
    if caps.is_dir() and any(caps.iterdir()) and not CAPS_SEED.is_dir():
        shutil.copytree(caps, CAPS_SEED)


def stop_libvirtd(lv: Libvirtd, pid: int, kind: str) -> None:
    if procs.alive(pid):
        clear_libvirtd(lv, kind)
    procs.stop(pid)
    stop_virtlogd(lv)


def clear_libvirtd(lv: Libvirtd, kind: str) -> None:
    """Destroy every guest of a libvirtd (before it stops: no QEMU outlives the sandbox)."""
    from pvc.hypervisor import adapter
    adapter.undefine_all(lv.uri(kind))


def stop_virtlogd(lv: Libvirtd) -> None:
    vl = procs.read_pidfile(lv.virtlogd_pidfile)
    if vl:
        procs.stop(vl)


# ------------------------------------------------------------------------------ Flower

def flower_spec(base: Path, port: int, user: str, password: str,
                client_config: Path) -> ProcessSpec:
    base.mkdir(parents=True, exist_ok=True)
    conf = base / "flowerconfig.py"
    write_private(conf, flower_config("127.0.0.1", port, user, password))
    cmd = [sys.executable, "-m", "tasks.flower", f"--conf={conf}"]
    return ProcessSpec("flower", cmd, base / "flower.log", env={"PVC_CONFIG": str(client_config)},
                       cwd=base)


# ------------------------------------------------------------------------------ Patroni

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


def patroni_spec(base: Path, name: str, address: str, subnet: str, zk_hosts: str, scope: str,
                 rest_port: int, pg_port: int, passwords: dict[str, str],
                 zk_login: tuple[str, str], rest_login: tuple[str, str]) -> ProcessSpec:
    """One Patroni member (PostgreSQL 15 from Debian, Patroni from the venv), run as the
    postgres user (initdb refuses root) on the node's cluster address. It logs in to
    ZooKeeper over SASL as zk_login (Patroni passes a `sasl` auth_data entry to kazoo as a
    DIGEST-MD5 login), and its REST API refuses writes without rest_login."""
    import pwd

    import yaml
    pg = pwd.getpwnam("postgres")
    base.mkdir(parents=True, exist_ok=True)
    os.chown(base, pg.pw_uid, pg.pw_gid)
    base.chmod(0o700)
    auth = {"superuser": {"username": "postgres", "password": passwords["superuser"]},
            "replication": {"username": "replicator", "password": passwords["replication"]},
            "rewind": {"username": "rewind_user", "password": passwords["rewind"]}}
    config = {
        "scope": scope, "namespace": "/service/", "name": name,
        "log": {"level": "INFO", "dir": str(base)},
        "restapi": {"listen": f"{address}:{rest_port}", "connect_address": f"{address}:{rest_port}",
                    "authentication": {"username": rest_login[0], "password": rest_login[1]}},
        "ctl": {"authentication": {"username": rest_login[0], "password": rest_login[1]}},
        "zookeeper": {"hosts": zk_hosts.split(","),
                      "auth_data": {"sasl": f"{zk_login[0]}:{zk_login[1]}"}},
        "bootstrap": {
            "dcs": {"ttl": 20, "loop_wait": 2, "retry_timeout": 4,
                    "maximum_lag_on_failover": 1048576,
                    "postgresql": {"use_pg_rewind": True, "parameters": {
                        "max_connections": 30, "shared_buffers": "16MB", "wal_level": "replica",
                        "hot_standby": "on", "max_wal_senders": 5, "max_replication_slots": 5,
                        "wal_keep_size": "64MB"}}},
            "initdb": [{"encoding": "UTF8"}, "data-checksums", {"auth": "scram-sha-256"}],
            "pg_hba": ["local all all trust",
                       f"host replication replicator {subnet} scram-sha-256",
                       f"host all all {subnet} scram-sha-256"]},
        "postgresql": {"listen": f"{address}:{pg_port}", "connect_address": f"{address}:{pg_port}",
                       "data_dir": str(base / "data"), "bin_dir": str(POSTGRES_BIN),
                       "pgpass": str(base / "pgpass"), "authentication": auth,
                       "parameters": {"unix_socket_directories": str(base)}},
    }
    conf = base / "patroni.yml"
    write_private(conf, yaml.safe_dump(config, sort_keys=False))
    os.chown(conf, pg.pw_uid, pg.pw_gid)
    patroni = str(Path(sys.executable).with_name("patroni"))
    return ProcessSpec(f"patroni-{name}", ["runuser", "-u", "postgres", "--", patroni, str(conf)],
                       base / "patroni.out")


# ------------------------------------------------------------------------------ PowerDNS

def pdns_spec(base: Path, name: str, listen: list[str], port: int, db_hosts: list[str],
              db_port: int, dbname: str, user: str, password: str) -> ProcessSpec:
    """PowerDNS (Debian's, gpgsql backend) for one coordinator: it reads the zones from
    whichever database member answers (a standby is fine: no SERVFAIL while the leader
    moves), caches off so what the aggregator writes is served at once, drops to `pdns`."""
    import pwd
    pdns = pwd.getpwnam("pdns")
    base.mkdir(parents=True, exist_ok=True)
    os.chown(base, pdns.pw_uid, pdns.pw_gid)
    base.chmod(0o700)
    conf = "\n".join([
        "launch=gpgsql", f"gpgsql-host={','.join(db_hosts)}", f"gpgsql-port={db_port}",
        f"gpgsql-dbname={dbname}", f"gpgsql-user={user}", f"gpgsql-password={password}",
        "gpgsql-extra-connection-parameters=target_session_attrs=prefer-standby "
        f"connect_timeout=3 {postgres.DEAD_PEER}",
        f"local-address={','.join(listen)}", f"local-port={port}",
        "local-address-nonexist-fail=no", f"socket-dir={base}", "daemon=no", "guardian=no",
        "disable-syslog=yes", "write-pid=no", "setuid=pdns", "setgid=pdns", "loglevel=4",
        "security-poll-suffix=", "api=no", "webserver=no", "disable-axfr=yes",
        "cache-ttl=0", "negquery-cache-ttl=0", "query-cache-ttl=0",
        "zone-cache-refresh-interval=0", ""])
    write_private(base / "pdns.conf", conf)
    os.chown(base / "pdns.conf", pdns.pw_uid, pdns.pw_gid)
    return ProcessSpec(f"pdns-{name}", ["/usr/sbin/pdns_server", f"--config-dir={base}"],
                       base / "pdns.out")
