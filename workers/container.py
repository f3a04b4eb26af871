"""pvc-container: the roles of docker-compose.yml's containers (docker/entrypoint.sh writes
/etc/pvc/pvc.yaml, then runs one).

  node    one node, as systemd runs a real one: virtlogd, libvirtd, and on a coordinator the
          control plane that dies with it (a ZooKeeper member, a Redis and a Sentinel, a
          Patroni member, PowerDNS once the DNS database exists), then pvc's daemon, worker
          and tailer, under supervisord (pvc.sandbox.supervisor: the sandbox's own), started
          in dependency order. At start it runs `pvc system boot` (a node that was flushed at
          its stop takes its VMs back); `docker stop` runs `pvc system shutdown` first (its VMs
          move elsewhere within the stop budget, as pvc-flush.service does), then stops its
          programs in order.
  init    once the nodes serve: the DNS database, the demo network and the demo guests, as
          `pvc sandbox up` makes them; then it exits.
  health  the node container's health check: this member serves.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

from pvc.core import config as configmod
from pvc.core.config import Config
from pvc.sandbox import procs, services
from pvc.sandbox.services import ProcessSpec
from pvc.sandbox.supervisor import Supervisor

CONFIG = Path("/etc/pvc/pvc.yaml")
STATE = Path("/var/lib/pvc-container")
SECRETS = Path("/run/secrets")
VENV_PYTHON = sys.executable
STOP_BUDGET = 75.0    # seconds of `docker stop`'s grace (compose: 90 s) the node's shutdown takes
# Stop order: what uses a service goes before the service (as the sandbox's).
STOP_ORDER = ("tailer", "worker", "node", "pdns", "libvirtd", "virtlogd", "patroni",
              "sentinel", "redis", "zookeeper")


def env_list(name: str) -> list[str]:
    return [x for x in os.environ.get(name, "").split(",") if x]


def secret(name: str) -> str:
    return (SECRETS / name).read_text().strip()


def login(name: str) -> tuple[str, str]:
    user, _, password = secret(name).partition(":")
    return user, password


# ---------------------------------------------------------------------- node

def node_specs(cfg: Config) -> list[ProcessSpec]:
    me, address = cfg.node.name, cfg.node.cluster_address
    coordinators, members = env_list("PVC_COORDINATORS"), env_list("PVC_COORDINATOR_ADDRESSES")
    logs = STATE / "logs"
    specs = [ProcessSpec("virtlogd", ["/usr/sbin/virtlogd"], logs / "virtlogd.log"),
             ProcessSpec("libvirtd", ["/usr/sbin/libvirtd", "--listen"],
                         logs / "libvirtd.log")]
    if me in coordinators:
        redis_pw = secret("redis_password")
        users = dict(login(n) for n in ("zookeeper_auth", "patroni_zookeeper_auth"))
        db_pw = secret("database_password")
        dns = cfg.cluster.dns
        specs += [
            services.zookeeper_spec(STATE / "zookeeper", 2181, users, address, members),
            services.redis_spec(STATE / "redis", 6379, redis_pw, (address,),
                                "" if address == members[0] else members[0], guarded=True),
            services.sentinel_spec(STATE / "sentinel", 26379, address, members[0], 6379,
                                   redis_pw, len(members) // 2 + 1, "sentinel"),
            _renamed(services.patroni_spec(STATE / "patroni", me, address, "10.201.0.0/24",
                                  cfg.cluster.zookeeper.hosts, cfg.cluster.database.scope,
                                  cfg.cluster.database.patroni_port,
                                  cfg.cluster.database.postgres_port,
                                  {w: db_pw for w in ("superuser", "replication", "rewind")},
                                  login("patroni_zookeeper_auth"),
                                  login("patroni_rest_auth")), "patroni"),
            _renamed(services.pdns_spec(
                STATE / "pdns", me, [address, cfg.cluster.floating_ip.split("/")[0]], dns.port,
                [address] + [m for m in members if m != address],
                cfg.cluster.database.postgres_port, dns.dbname, dns.user,
                secret("dns_password")), "pdns")]
    for role, module in (("node", "workers.node_daemon"), ("worker", "workers.worker"),
                         ("tailer", "workers.tailer")):
        specs.append(ProcessSpec(role, [VENV_PYTHON, "-m", module, "--config", str(CONFIG)],
                                 logs / f"{role}.log"))
    return specs


def _renamed(spec: ProcessSpec, name: str) -> ProcessSpec:
    return replace(spec, name=name)


def run_node(cfg: Config) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    STATE.chmod(0o711)    # the postgres user passes to Patroni's directory, looks at nothing
    _libvirt_config(cfg.node.cluster_address)
    specs = node_specs(cfg)
    sup = Supervisor(STATE)
    sup.write(specs)
    supervisord = sup.start()
    names = {s.name for s in specs}
    for name in ("virtlogd", "libvirtd", "zookeeper", "redis", "sentinel", "patroni"):
        if name in names:
            sup.start_program(name)
    procs.wait_until("libvirtd", lambda: Path("/run/libvirt/libvirt-sock").exists(), 60)
    for name in ("node", "worker", "tailer"):   # they ride out an ensemble not yet serving
        sup.start_program(name)
    if "pdns" in names:
        threading.Thread(target=_pdns_when_its_database_exists, args=(cfg, sup),
                         daemon=True).start()
    threading.Thread(target=_pvc, args=("system", "boot", "--timeout", "300"),
                     daemon=True).start()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stopping.set())
    stopping.wait()
    _pvc("system", "shutdown", "--budget", str(STOP_BUDGET))   # its VMs go elsewhere first
    programs = sup.programs()
    for prefix in STOP_ORDER:
        stage = [n for n in programs if n.startswith(prefix)]
        if stage:
            sup.stop_programs(stage)
    sup.shutdown(supervisord)


def _libvirt_config(address: str) -> None:
    """Migrations between the node containers: libvirt over TCP on the cluster address only
    (a test cluster's private network; a real cluster uses qemu+ssh or TLS). QEMU gets no
    cgroup controllers: a container's cgroups are read-only (../shared/notes/docker.md)."""
    with open("/etc/libvirt/libvirtd.conf", "a") as conf:
        conf.write(f'listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "{address}"\n'
                   'auth_tcp = "none"\n')
    with open("/etc/libvirt/qemu.conf", "a") as conf:
        conf.write("cgroup_controllers = [ ]\n")


def _pdns_when_its_database_exists(cfg: Config, sup: Supervisor) -> None:
    from pvc.coordinator import postgres
    dns = cfg.cluster.dns
    address = cfg.node.cluster_address
    procs.wait_until("the DNS database", lambda: postgres.dns_database_answers(
        address, cfg.cluster.database.postgres_port, dns.dbname, dns.user,
        secret("dns_password")), 600)
    sup.start_program("pdns")


def _pvc(*args: str) -> int:
    return subprocess.run([VENV_PYTHON, "-m", "cli.main", "--config", str(CONFIG), *args],
                          check=False).returncode


# ---------------------------------------------------------------------- init

def run_init(cfg: Config) -> None:
    from pvc.coordinator import postgres
    from pvc.coordinator.patroni import Patroni
    from pvc.core.errors import Conflict, PvcError
    from pvc.sandbox import sandbox as sb
    members = env_list("PVC_COORDINATOR_ADDRESSES")
    db = cfg.cluster.database
    patroni = Patroni([f"http://{m}:{db.patroni_port}" for m in members], timeout=2,
                      auth=cfg.patroni_auth())

    found: list[str] = []

    def leader() -> bool:
        try:
            view = patroni.cluster()
        except PvcError:
            return False
        found[:] = [view.leader]
        return bool(view.leader) and all(m.healthy for m in view.members)

    nodes = env_list("PVC_COORDINATORS")
    dns = cfg.cluster.dns

    def bootstrapped() -> bool:
        if not leader():
            return False
        try:
            postgres.bootstrap_dns_database(members[nodes.index(found[0])], db.postgres_port,
                                            secret("database_password"), dns.dbname, dns.user,
                                            secret("dns_password"))
            return True
        except postgres.Error as e:   # the leader moved meanwhile (it follows the primary)
            print(f"the DNS database: {str(e).strip().splitlines()[0]}; asking again",
                  flush=True)
            return False

    procs.wait_until("the DNS database on the database leader", bootstrapped, 300)
    try:
        sb.add_demo_network(cfg)
    except Conflict:
        pass    # made by an earlier `up`
    try:
        print("demo VMs:", ", ".join(sb.define_demo_vms(cfg, nodes, 2, "qemu")), flush=True)
    except Conflict as e:
        print(f"demo VMs defined by an earlier `up`: {e}", flush=True)


# ---------------------------------------------------------------------- health

def health(cfg: Config) -> int:
    """0 when this member serves: its pvc daemon runs; on a coordinator its ZooKeeper member
    is in the ensemble and its Redis answers."""
    from pvc.core.cluster import Cluster
    from pvc.core.errors import PvcError
    from pvc.core.states import DaemonState
    from pvc.core.zookeeper import member_modes
    address = cfg.node.cluster_address
    if cfg.node.name in env_list("PVC_COORDINATORS"):
        mode = member_modes(f"{address}:2181").get(f"{address}:2181")
        if mode not in ("leader", "follower"):
            print(f"ZooKeeper member {address}: {mode}")
            return 1
        import redis
        try:
            redis.Redis(host=address, password=secret("redis_password"),
                        socket_timeout=2).ping()
        except redis.RedisError as e:
            print(f"Redis {address}: {e}")
            return 1
    try:
        c = Cluster.connect(cfg)
        try:
            state = c.node(cfg.node.name).daemon_state
        finally:
            c.close()
    except PvcError as e:
        print(f"pvc: {e}")
        return 1
    print(f"pvc daemon {state}")
    return 0 if state == DaemonState.RUN else 1


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else "node"
    cfg = configmod.load(CONFIG)
    if role == "node":
        run_node(cfg)
    elif role == "init":
        run_init(cfg)
    elif role == "health":
        sys.exit(health(cfg))
    else:
        sys.exit(f"unknown role {role!r} (node, init, health)")


if __name__ == "__main__":
    main()
