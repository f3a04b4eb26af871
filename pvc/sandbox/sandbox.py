"""`pvc sandbox`: a whole pvc cluster on one machine.

A ZooKeeper ensemble (a member in each coordinator's namespace), one Redis, one Flower; per
simulated node its own libvirtd (qemu: real TCG
guests; test: libvirt's test driver), node daemon, Celery worker and console tailer. Demo VMs
are defined with a node and desired state `start`, so each node daemon's start-up reconcile
starts its share: the same code path as a production node coming up.

Every process runs under supervisord (pvc.sandbox.supervisor), as systemd runs them in
production: a process that dies is started again. Everything lives under one directory
(default /run/pvc/sandbox, $PVC_SANDBOX_DIR); its client.yaml is what plain `pvc` commands use
while the sandbox is up. state.json records supervisord's PID; `down` stops every program
through it (in dependency order), then supervisord, then sweeps for strays.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
import uuid
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

from pvc.coordinator import postgres
from pvc.core import config as configmod
from pvc.core.config import (
    ClusterConfig,
    Config,
    DatabaseConfig,
    DnsConfig,
    FencingConfig,
    MetricsConfig,
    MigrationConfig,
    NodeConfig,
    OperationsConfig,
    RedisConfig,
    StorageConfig,
    ZooKeeperConfig,
)
from pvc.core.errors import PvcError
from pvc.core.states import DaemonState
from pvc.network import ip, managed
from pvc.network.managed import ManagedNetwork
from pvc.sandbox import bmc, guest, monitoring, network, procs, services
from pvc.sandbox import storage as cephd
from pvc.sandbox.services import Libvirtd
from pvc.sandbox.supervisor import Supervisor
from pvc.vm import definition

KINDS = ("qemu", "test")
FLOWER_USER = "pvc"
Say = Callable[[str], None]


@dataclass
class Layout:
    """Where everything of one sandbox lives, and its ports."""
    dir: Path
    port_offset: int = 0

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def client_config(self) -> Path:
        return self.dir / "client.yaml"

    @property
    def zk_port(self) -> int:
        return 2181 + self.port_offset

    @property
    def redis_port(self) -> int:
        return 6379 + self.port_offset

    @property
    def flower_port(self) -> int:
        return 5555 + self.port_offset

    @property
    def metrics_port(self) -> int:
        return 9105 + self.port_offset

    @property
    def prometheus_port(self) -> int:
        return 9090 + self.port_offset

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def secret(self, name: str) -> Path:
        return self.dir / "secrets" / name

    def node_dir(self, name: str) -> Path:
        return self.dir / "nodes" / name

    def node_config(self, name: str) -> Path:
        return self.node_dir(name) / "pvc.yaml"

    def libvirtd(self, name: str, index: int) -> Libvirtd:
        lo = 49200 + self.port_offset + 10 * index
        return Libvirtd(self.node_dir(name) / "libvirt", index, (lo, lo + 9))

    def console_dir(self, name: str) -> Path:
        return self.node_dir(name) / "console"

    def zk_members(self, nodes: list[str]) -> list[str]:
        """The ZooKeeper ensemble: a member on each coordinator (the first three nodes), on
        its cluster address, as production runs it."""
        return [self.net.node_address(i) for i in range(1, min(len(nodes), 3) + 1)]

    def zk_hosts(self, nodes: list[str]) -> str:
        return ",".join(f"{a}:{self.zk_port}" for a in self.zk_members(nodes))

    @property
    def sentinel_port(self) -> int:
        return 26379 + self.port_offset

    def sentinels(self, nodes: list[str]) -> str:
        """A Redis and a Sentinel on each coordinator, like ZooKeeper's members."""
        return ",".join(f"{a}:{self.sentinel_port}" for a in self.zk_members(nodes))

    def ceph(self, nodes: list[str]) -> cephd.CephLayout:
        """The sandbox's Ceph: a monitor and a manager on each coordinator, an OSD on each
        node."""
        members = self.zk_members(nodes)
        return cephd.CephLayout(self.dir / "ceph", dict(zip(nodes, members)),
                                {n: self.net.node_address(i) for i, n in enumerate(nodes, 1)})

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.dir)

    @property
    def net(self) -> network.ClusterNet:
        return network.ClusterNet(self.dir, self.port_offset)


@dataclass
class State:
    hypervisor: str
    nodes: list[str]
    port_offset: int
    started: float
    pids: dict[str, int] = field(default_factory=dict)
    demo_vms: list[str] = field(default_factory=list)
    database: bool = False
    storage: bool = False
    monitoring: bool = False

    def save(self, layout: Layout) -> None:
        services.write_private(layout.state_file, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, layout: Layout) -> "State | None":
        try:
            return cls(**json.loads(layout.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def default_layout(port_offset: int = 0) -> Layout:
    return Layout(configmod.sandbox_dir(), port_offset)


# ------------------------------------------------------------------------------ configs

def node_names(count: int) -> list[str]:
    return [f"hv{i}" for i in range(1, count + 1)]


def cluster_config(layout: Layout, nodes: list[str], database: bool = False,
                   storage: StorageConfig | None = None,
                   monitoring: bool = False) -> ClusterConfig:
    net = layout.net
    return ClusterConfig(
        storage=storage or StorageConfig(),
        # figures every 2 s: a change shows in Prometheus within seconds
        metrics=MetricsConfig(enabled=True, token_file=str(layout.secret("metrics.token")),
                              port=layout.metrics_port, interval=2.0, stats_interval=2.0)
        if monitoring else MetricsConfig(),
        database=DatabaseConfig(enabled=database, scope=f"pvc{layout.port_offset}",
                                rest_auth_file=str(layout.secret("patroni-rest.auth"))
                                if database else ""),
        dns=DnsConfig(enabled=database, password_file=str(layout.secret("dns.password"))
                      if database else ""),
        name="sandbox", coordinators=nodes[:3], floating_ip=net.floating_ip,
        flower_url=f"http://127.0.0.1:{layout.flower_port}",
        # keepalives every 2 s: dead after 6 missed, fenced after 2 more checks (~16 s)
        fencing=FencingConfig(intervals=6, saving_throws=2),
        zookeeper=ZooKeeperConfig(hosts=layout.zk_hosts(nodes),
                                  session_timeout=4.0,
                                  auth_file=str(layout.secret("zookeeper.auth"))),
        redis=RedisConfig(host=layout.zk_members(nodes)[0], port=layout.redis_port,
                          sentinels=layout.sentinels(nodes),
                          master_name=services.SENTINEL_MASTER,
                          password_file=str(layout.secret("redis.password"))),
        migration=MigrationConfig(timeout=120.0),
        # short bounds: the sandbox shows recovery in seconds, not minutes
        operations=OperationsConfig(shutdown_timeout=15.0, lost_after=10.0, drift_grace=5.0),
    )


def node_config(layout: Layout, cluster: ClusterConfig, name: str, index: int,
                kind: str, storage: bool = False) -> Config:
    lv = layout.libvirtd(name, index)
    node = NodeConfig(name=name, libvirt_uri=lv.uri(kind), domain_type=kind,
                      console_log_directory=str(layout.console_dir(name)),
                      keepalive_interval=2.0,
                      migration_address=layout.net.node_address(index),
                      cluster_interface=network.CLUSTER_LINK, enable_networking=True,
                      enable_storage=storage,
                      run_directory=str(layout.node_dir(name)),
                      ipmi_host=layout.net.host_address,
                      ipmi_port=bmc.port(layout.port_offset, index), ipmi_user=bmc.USER,
                      ipmi_password_file=str(layout.secret(f"bmc-{name}.password")))
    return Config(cluster=cluster, node=node)


# The sandbox's managed network: the demo VMs are on it.
DEMO_NETWORK = ManagedNetwork(100, "sandbox.pvc", "10.100.0.0/24", "10.100.0.1", "10.100.0.100",
                              "10.100.0.199", "the sandbox's demo network")


DEMO_DISK_BYTES = 64 * 1024 ** 2


def demo_xml(name: str, kind: str, index: int, disk: str = "") -> str:
    """A demo VM as an operator would write it for KVM; the sandbox runs it on its kind. With
    a disk (POOL/VOLUME on Ceph), the guest keeps a counter on it (pvc.sandbox.guest)."""
    memory = 128 if kind == "qemu" else 16
    kernel, initrd = guest.paths()
    disk_xml = (f"""
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback' discard='unmap'/>
      <source protocol='rbd' name='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>""" if disk else "")
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet pvc.name={name} pvc.tick={guest.TICK_SECONDS}</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>{disk_xml}
    <serial type='pty'>
      <log file='/var/log/pvc/console/{name}.log' append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <interface type='bridge'>
      <source bridge='{DEMO_NETWORK.bridge}'/>
      <mac address='52:54:00:00:{index // 256:02x}:{index % 256:02x}'/>
      <model type='virtio'/>
    </interface>
    <memballoon model='none'/>
  </devices>
</domain>
"""


# ------------------------------------------------------------------------------ up

def running_state(layout: Layout) -> State | None:
    """The sandbox's state if its supervisor (or any process it started) still runs."""
    state = State.load(layout)
    if state and any(procs.alive(pid) for pid in state.pids.values()):
        return state
    return None


def up(layout: Layout, nodes: int = 3, vms: int | None = None, kind: str = "qemu",
       say: Say = print, database: bool = True, storage: bool = True,
       monitoring: bool = True) -> tuple[State, bool]:
    """Start the sandbox. Returns (state, started): started False if it was already up."""
    if kind not in KINDS:
        raise PvcError(f"unknown hypervisor kind {kind!r} (one of {', '.join(KINDS)})")
    if nodes < 1:
        raise PvcError("a sandbox needs at least one node")
    existing = running_state(layout)
    if existing:
        return existing, False
    if os.geteuid() != 0:
        raise PvcError("the sandbox runs hypervisors and needs root")
    vms = (3 if kind == "qemu" else 10) if vms is None else vms
    if kind == "qemu":
        say("building the guest image (once)") if not guest.is_built() else None
        guest.build()
    if layout.dir.exists():
        shutil.rmtree(layout.dir)
    layout.dir.mkdir(parents=True)
    layout.dir.chmod(0o711)   # others may pass (the postgres user to its data), not look
    names = node_names(nodes)
    state = State(hypervisor=kind, nodes=names, port_offset=layout.port_offset,
                  started=time.time(), database=database, storage=storage,
                  monitoring=monitoring)
    try:
        _start_all(layout, state, vms, say)
    except BaseException:
        say("start-up failed; stopping what was started")
        _stop_all(layout, state, say=lambda _m: None)
        raise
    return state, True


def _start_all(layout: Layout, state: State, vm_count: int, say: Say) -> None:
    t0 = time.monotonic()
    kind, names = state.hypervisor, state.nodes

    def step(msg: str) -> None:
        say(f"[{time.monotonic() - t0:5.1f}s] {msg}")

    redis_pw = services.write_secret(layout.secret("redis.password"))
    logins = {name: (user, services.write_secret(layout.secret(name),
                                                 f"{user}:{services.new_password()}")
                     .partition(":")[2])
              for name, user in (("zookeeper.auth", "pvc"), ("patroni-zookeeper.auth", "patroni"),
                                 ("patroni-rest.auth", "patroni"))}
    flower_pw = services.write_secret(layout.secret("flower.password"))
    dns_pw = services.write_secret(layout.secret("dns.password")) if state.database else ""
    db_passwords = {who: secrets.token_urlsafe(12) for who in
                    ("superuser", "replication", "rewind")}
    if state.monitoring:
        services.write_secret(layout.secret("metrics.token"))
        services.write_secret(layout.secret("prometheus.password"))
    for port, what in ((layout.flower_port, "Flower"), (layout.prometheus_port, "Prometheus")):
        if not procs.port_free(port):
            raise procs.StartFailed(f"port {port} ({what}) is already in use")
    libvirtds = {n: layout.libvirtd(n, i + 1) for i, n in enumerate(names)}
    layout.net.up(names)
    step(f"cluster network {layout.net.cidr(0)}: a network namespace per node")
    ceph = layout.ceph(names) if state.storage else None
    if ceph:
        cephd.bootstrap(ceph)
        osds_made = cephd.prepare_osds(ceph)   # in the background meanwhile
    storage = ceph.storage_config(str(uuid.uuid4())) if ceph else None
    cluster = cluster_config(layout, names, state.database, storage, state.monitoring)
    client = Config(cluster=cluster)
    configmod.write(client, layout.client_config)
    for i, n in enumerate(names):
        layout.console_dir(n).mkdir(parents=True, exist_ok=True)
        configmod.write(node_config(layout, cluster, n, i + 1, kind, state.storage),
                        layout.node_config(n))

    sup = layout.supervisor
    sup.write(_specs(layout, libvirtds, redis_pw, flower_pw,
                     cluster.coordinators if state.database else [], cluster, dns_pw,
                     db_passwords, logins) + (_ceph_specs(layout, ceph) if ceph else []) +
              ([_prometheus_spec(layout, cluster)] if state.monitoring else []))
    state.pids["supervisord"] = sup.start()
    state.save(layout)

    def start(name: str) -> int:
        state.pids[name] = sup.start_program(name)
        state.save(layout)
        return state.pids[name]

    for n in names:   # a BMC per node, on before its node, as in a rack
        start(f"bmc-{n}")
    step(f"{len(names)} BMCs (ipmi_sim) on {layout.net.host_address}, UDP "
         f"{bmc.port(layout.port_offset, 1)}-{bmc.port(layout.port_offset, len(names))}")
    for n in names:   # slow to start: launch them first, wait later
        start(f"libvirtd-{n}")
    members = layout.zk_members(names)
    zk_pids = {n: start(f"zookeeper-{n}") for n in cluster.coordinators}
    if ceph:   # the monitors' first election takes seconds: under way while the rest starts
        for n in ceph.mons:
            start(f"ceph-mon-{n}")
    for n, address in zip(cluster.coordinators, members):
        services.wait_zookeeper(layout.zk_port, zk_pids[n],
                                layout.dir / "zookeeper" / n / "stdout.log", address, 60)
    step(f"ZooKeeper: an ensemble of {len(members)} on {', '.join(cluster.coordinators)} "
         f"({layout.zk_hosts(names)})")
    for n, address in zip(cluster.coordinators, members):
        services.wait_redis(layout.dir / "redis" / n, layout.redis_port, start(f"redis-{n}"),
                            address)
    for n in cluster.coordinators:
        start(f"sentinel-{n}")
    _wait_broker(layout, client)
    step(f"Redis on {', '.join(cluster.coordinators)} (master {members[0]}, replicas, a "
         f"Sentinel each; password in {layout.secret('redis.password')}, append-only file)")
    if state.database:
        for n in cluster.coordinators:
            start(f"patroni-{n}")
    for n, lv in libvirtds.items():
        services.wait_libvirtd(lv, state.pids[f"libvirtd-{n}"], kind)
    step(f"{len(names)} libvirtd ({kind}) up")
    if ceph:
        _start_ceph(ceph, osds_made, start)
        step(f"Ceph: a monitor and a manager on {', '.join(ceph.mons)}, an OSD on "
             f"{', '.join(ceph.osds)}, pool {cephd.POOL} (cephx; {ceph.conf})")
    if state.database:
        leader = _wait_database(layout, cluster)
        step(f"PostgreSQL under Patroni on {', '.join(cluster.coordinators)}")
        dns = cluster.dns
        postgres.bootstrap_dns_database(
            layout.net.node_address(names.index(leader) + 1), 5432,
            db_passwords["superuser"], dns.dbname, dns.user, dns_pw)
        # PowerDNS exits if its database refuses it, and each one may read any member: every
        # member has the DNS database before the first PowerDNS starts
        for n in cluster.coordinators:
            address = layout.net.node_address(names.index(n) + 1)
            procs.wait_until(f"the DNS database replicated to {n}", partial(
                postgres.dns_database_answers, address, 5432, dns.dbname, dns.user, dns_pw),
                30, None, layout.dir / "db" / n / "patroni.out")
        for n in cluster.coordinators:
            start(f"pdns-{n}")
        for n in cluster.coordinators:
            address = layout.net.node_address(names.index(n) + 1)
            procs.wait_until(f"PowerDNS on {n}", partial(procs.port_open, dns.port, address),
                             30, state.pids[f"pdns-{n}"],
                             layout.dir / "db" / f"pdns-{n}" / "pdns.out")
        step(f"PowerDNS on {', '.join(cluster.coordinators)} and the floating IP, port "
             f"{dns.port}")

    add_demo_network(client)
    step(f"managed network {DEMO_NETWORK.vni}: {DEMO_NETWORK.ipv4}, domain "
         f"{DEMO_NETWORK.domain}, bridge {DEMO_NETWORK.bridge} on every node")
    state.demo_vms = define_demo_vms(client, names, vm_count, kind)
    state.save(layout)
    for n in names:
        for role in NODE_ROLES:
            start(f"{role}-{n}")
    flower = start("flower")
    procs.wait_until("Flower", lambda: procs.port_open(layout.flower_port), 30, flower,
                     layout.dir / "flower" / "flower.log")
    step(f"Flower on http://127.0.0.1:{layout.flower_port}")
    if state.monitoring:
        prometheus = start("prometheus")
        procs.wait_until("Prometheus", lambda: procs.port_open(layout.prometheus_port), 30,
                         prometheus, layout.dir / "prometheus" / "prometheus.log")
        step(f"Prometheus on {layout.prometheus_url}, scraping pvc's metrics at "
             f"{cluster.floating_ip.split('/')[0]}:{layout.metrics_port} (the primary)")
    _wait_cluster_ready(layout, state, client)
    if kind == "qemu" and state.demo_vms:   # guests run: QEMU's capabilities are probed
        services.save_caps_seed(next(iter(libvirtds.values())))
    step(f"{len(names)} nodes running, {len(state.demo_vms)} demo VMs running, workers ready "
         "(supervised: a process that dies is started again)")


def _prometheus_spec(layout: Layout, cluster: ClusterConfig) -> services.ProcessSpec:
    base = layout.dir / "prometheus"
    patroni = [f"{a}:{cluster.database.patroni_port}"
               for a in layout.zk_members(cluster.coordinators)] if cluster.database.enabled \
        else []
    user, password_file = (monitoring.password_file_of(
        Path(cluster.database.rest_auth_file), layout.secret("prometheus-patroni.password"))
        if patroni else ("", None))
    targets = monitoring.Targets(f"{cluster.floating_ip.split('/')[0]}:{layout.metrics_port}",
                                 layout.secret("metrics.token"), patroni, user, password_file)
    return monitoring.spec(base, layout.prometheus_port, prometheus_password(layout), targets)


def prometheus_password(layout: Layout) -> str:
    return _read(layout.secret("prometheus.password")).strip()


def _ceph_specs(layout: Layout, ceph: cephd.CephLayout) -> list[services.ProcessSpec]:
    net = layout.net
    return ([cephd.mon_spec(ceph, n, net.ns(n)) for n in ceph.mons] +
            [cephd.mgr_spec(ceph, n, net.ns(n)) for n in ceph.mons] +
            [cephd.osd_spec(ceph, n, net.ns(n)) for n in ceph.osds])


def _start_ceph(ceph: cephd.CephLayout, osds_made: list["Future[None]"],
                start: Callable[[str], int]) -> None:
    cephd.wait_quorum(ceph)
    for n in ceph.mons:
        start(f"ceph-mgr-{n}")
    cephd.register_osds(ceph, osds_made)
    for n in ceph.osds:
        start(f"ceph-osd-{n}")
    cephd.make_pool(ceph)


# The processes of one node, each a supervised program "<role>-<node>", and their entry points.
NODE_ROLES = {"node": "workers.node_daemon", "worker": "workers.worker",
              "tailer": "workers.tailer"}


def _specs(layout: Layout, libvirtds: dict[str, Libvirtd], redis_pw: str,
           flower_pw: str, database_on: list[str], cluster: ClusterConfig,
           dns_pw: str, db_passwords: dict[str, str],
           logins: dict[str, tuple[str, str]]) -> list[services.ProcessSpec]:
    """Every program of the sandbox, as supervisord runs them. logins: (user, password) by
    secret file name: pvc's and Patroni's ZooKeeper logins, Patroni's REST API."""
    net = layout.net
    zk_users = dict([logins["zookeeper.auth"], logins["patroni-zookeeper.auth"]])
    members = layout.zk_members(list(libvirtds))
    specs = []
    for n, address in zip(cluster.coordinators, members):   # in the coordinator's namespace
        zk = services.zookeeper_spec(layout.dir / "zookeeper" / n, layout.zk_port, zk_users,
                                     address, members, f"zookeeper-{n}")
        specs.append(replace(zk, command=ip.in_netns(net.ns(n), zk.command)))
    quorum = len(members) // 2 + 1
    for n, address in zip(cluster.coordinators, members):   # Redis and a Sentinel each
        redis = services.redis_spec(layout.dir / "redis" / n, layout.redis_port, redis_pw,
                                    (address,), "" if address == members[0] else members[0],
                                    guarded=len(members) > 1, name=f"redis-{n}")
        sentinel = services.sentinel_spec(layout.dir / "sentinel" / n, layout.sentinel_port,
                                          address, members[0], layout.redis_port, redis_pw,
                                          quorum, f"sentinel-{n}")
        specs += [replace(s, command=ip.in_netns(net.ns(n), s.command))
                  for s in (redis, sentinel)]
    specs.append(services.flower_spec(layout.dir / "flower", layout.flower_port, FLOWER_USER,
                                      flower_pw, layout.client_config))
    for i, n in enumerate(libvirtds, 1):
        d = bmc.files(layout.dir, n, net.host_address, bmc.port(layout.port_offset, i),
                      services.write_secret(layout.secret(f"bmc-{n}.password"),
                                            secrets.token_hex(8)))   # IPMI: 16 at most
        specs.append(services.ProcessSpec(f"bmc-{n}", bmc.command(d), d / "ipmi_sim.log"))
    for n, lv in libvirtds.items():   # a node's processes live in its network namespace
        libvirtd = services.libvirtd_spec(lv, f"libvirtd-{n}")
        specs.append(replace(libvirtd, command=ip.in_netns(net.ns(n), libvirtd.command)))
        cfg = str(layout.node_config(n))
        for role, module in NODE_ROLES.items():
            specs.append(services.ProcessSpec(
                f"{role}-{n}",
                ip.in_netns(net.ns(n), [sys.executable, "-m", module, "--config", cfg]),
                layout.node_dir(n) / f"{role}.log"))
    if database_on:
        passwords = db_passwords
        db_dir = layout.dir / "db"
        db_dir.mkdir(exist_ok=True)
        db_dir.chmod(0o711)
        for n in database_on:
            index = list(libvirtds).index(n) + 1
            spec = services.patroni_spec(
                db_dir / n, n, net.node_address(index), net.cidr(0),
                cluster.zookeeper.hosts, f"pvc{layout.port_offset}",
                8008, 5432, passwords, logins["patroni-zookeeper.auth"],
                logins["patroni-rest.auth"])
            specs.append(replace(spec, command=ip.in_netns(net.ns(n), spec.command)))
        members = [net.node_address(list(libvirtds).index(n) + 1) for n in database_on]
        for n, address in zip(database_on, members):
            dns = cluster.dns
            spec = services.pdns_spec(
                db_dir / f"pdns-{n}", n, [address, net.floating_ip.split("/")[0]], dns.port,
                [address] + [m for m in members if m != address], 5432, dns.dbname, dns.user,
                dns_pw)
            specs.append(replace(spec, command=ip.in_netns(net.ns(n), spec.command)))
    return specs


def _wait_broker(layout: Layout, client: Config) -> None:
    """Until the Sentinels agree on the master and every replica follows it."""
    from pvc.core import redis_client as redisconn

    def ready() -> bool:
        found = redisconn.status(client)
        return bool(found.get("master")) and not found.get("problems") and \
            len(found.get("replicas", [])) == len(layout.zk_members(
                client.cluster.coordinators)) - 1
    procs.wait_until("the broker (Redis with Sentinels)", ready, 60, None,
                     layout.dir / "sentinel" / client.cluster.coordinators[0] / "sentinel.log")


def _wait_database(layout: Layout, cluster: ClusterConfig) -> str:
    """Until Patroni has a leader and every member runs (a replica streams); the leader."""
    from pvc.coordinator.patroni import Patroni
    patroni = Patroni([f"http://{layout.net.node_address(i + 1)}:8008"
                       for i in range(len(cluster.coordinators))], timeout=2,
                      auth=Config(cluster=cluster).patroni_auth())

    def ready() -> bool:
        try:
            view = patroni.cluster()
        except PvcError:
            return False
        return bool(view.leader) and len(view.members) == len(cluster.coordinators) and \
            all(m.healthy for m in view.members)

    first = cluster.coordinators[0]
    procs.wait_until("the database (Patroni)", ready, 90, None,
                     layout.dir / "db" / first / "patroni.out")
    return patroni.cluster().leader


def add_demo_network(client: Config) -> None:
    from pvc.core.cluster import Cluster
    cluster = Cluster.connect(client)
    try:
        managed.add(cluster, DEMO_NETWORK)
    finally:
        cluster.close()


def define_demo_vms(client: Config, names: list[str], count: int, kind: str) -> list[str]:
    """The demo VMs, each with a disk on Ceph when the sandbox has storage."""
    from pvc.core.cluster import Cluster
    from pvc.storage.ceph import connect
    storage = client.cluster.storage
    demos = [f"demo{i + 1}" for i in range(count)]
    if storage.enabled and demos:   # every disk in one connection
        with connect(storage) as ceph:
            for name in demos:
                ceph.volume_add(storage.pool, f"{name}-disk", DEMO_DISK_BYTES)
    cluster = Cluster.connect(client)
    defined = []
    try:
        for n, node in enumerate(names):   # round robin: one batch of definitions per node
            sources = [(name, demo_xml(name, kind, i, f"{storage.pool}/{name}-disk"
                                       if storage.enabled else ""))
                       for i, name in enumerate(demos) if i % len(names) == n]
            if sources:
                defined += [vm.name for vm in definition.define_many(
                    cluster, sources, node=node, initial_state="start",
                    allow_unknown_nodes=True)]
    finally:
        cluster.close()
    return sorted(defined, key=demos.index)


def _wait_cluster_ready(layout: Layout, state: State, client: Config) -> None:
    from pvc.core.cluster import Cluster
    cluster = Cluster.connect(client)
    try:
        def nodes_up() -> bool:
            nodes = cluster.nodes()
            return len(nodes) == len(state.nodes) and all(n.daemon_state == DaemonState.RUN
                                                          for n in nodes)

        def demos_running() -> bool:
            running: set[str] = set()
            for n in cluster.nodes():
                running.update(str(d.get("name")) for d in n.domains.values())
            return set(state.demo_vms) <= running

        def workers_ready() -> bool:
            return all("ready." in _read(layout.node_dir(n) / "worker.log")
                       for n in state.nodes)

        first_node = state.pids[f"node-{state.nodes[0]}"]
        procs.wait_until("node daemons", nodes_up, 90, first_node,
                         layout.node_dir(state.nodes[0]) / "node.log")
        procs.wait_until("demo VMs", demos_running, 120)
        procs.wait_until("Celery workers", workers_ready, 60,
                         state.pids[f"worker-{state.nodes[0]}"],
                         layout.node_dir(state.nodes[0]) / "worker.log")
    finally:
        cluster.close()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# ------------------------------------------------------------------------------ down

# Stop order: what uses a service goes before the service.
STOP_ORDER = ("bmc-", "prometheus", "flower", "tailer-", "worker-", "node-", "libvirtd-", "ceph-osd-",
              "ceph-mgr-", "ceph-mon-", "pdns-", "patroni-", "sentinel-", "redis-", "zookeeper-")


def down(layout: Layout, say: Say = print) -> bool:
    """Stop every process of the sandbox. False if there was nothing to stop."""
    state = State.load(layout)
    if state is None:
        strays = procs.processes_mentioning(str(layout.dir) + "/")
        for pid in strays:
            procs.stop(pid)
        return bool(strays)
    _stop_all(layout, state, say)
    shutil.rmtree(layout.dir, ignore_errors=True)
    return True


def _stop_all(layout: Layout, state: State, say: Say) -> None:
    """Programs in dependency order through the supervisor (so none is started again), guests
    destroyed before their libvirtd goes, then the supervisor, then any stray."""
    sup = layout.supervisor
    programs = sup.programs()
    for prefix in STOP_ORDER:   # a stage's programs at once (every node's workers, …)
        stage = [n for n in programs if n.startswith(prefix)]
        if not stage:
            continue
        if prefix == "libvirtd-":
            for name in stage:
                node = name.split("-", 1)[1]
                lv = layout.libvirtd(node, state.nodes.index(node) + 1)
                services.clear_libvirtd(lv, state.hypervisor)
        try:
            sup.stop_programs(stage)
        except (OSError, procs.StartFailed) as e:
            say(f"could not stop {', '.join(stage)} through the supervisor: {e}")
    for n in state.nodes:
        services.stop_virtlogd(layout.libvirtd(n, state.nodes.index(n) + 1))
    if "supervisord" in state.pids:
        sup.shutdown(state.pids["supervisord"])
    try:
        layout.net.down()
    except PvcError as e:
        say(f"could not remove the cluster network: {e}")
    strays = procs.processes_mentioning(str(layout.dir) + "/")
    for pid in strays:
        say(f"stopping stray process {pid}")
        procs.stop(pid, timeout=5)


# ------------------------------------------------------------------------------ status

def status(layout: Layout) -> dict[str, Any]:
    state = State.load(layout)
    if state is None:
        return {"running": False, "dir": str(layout.dir)}
    supervisor_pid = state.pids.get("supervisord", 0)
    programs = layout.supervisor.programs() if procs.alive(supervisor_pid) else {}
    return {
        "running": bool(programs),
        "healthy": bool(programs) and all(p["alive"] for p in programs.values()),
        "supervisor": {"pid": supervisor_pid, "alive": procs.alive(supervisor_pid),
                       "log": str(layout.supervisor.log)},
        "dir": str(layout.dir),
        "hypervisor": state.hypervisor,
        "nodes": state.nodes,
        "demo_vms": state.demo_vms,
        "started": state.started,
        "client_config": str(layout.client_config),
        "zookeeper": layout.zk_hosts(state.nodes),
        "redis": {"sentinels": layout.sentinels(state.nodes),
                  "master_name": services.SENTINEL_MASTER},
        "network": {"subnet": layout.net.cidr(0), "floating_ip": layout.net.floating_ip,
                    "host_address": layout.net.host_address,
                    "namespaces": {n: layout.net.ns(n) for n in state.nodes},
                    "client_namespace": layout.net.client},
        "flower": {"url": f"http://127.0.0.1:{layout.flower_port}", "user": FLOWER_USER,
                   "password_file": str(layout.secret("flower.password"))},
        "prometheus": {"url": layout.prometheus_url, "user": monitoring.USER,
                       "password_file": str(layout.secret("prometheus.password")),
                       "metrics": f"http://{layout.net.floating_ip.split('/')[0]}:"
                                  f"{layout.metrics_port}/metrics",
                       "metrics_token_file": str(layout.secret("metrics.token"))}
        if state.monitoring else {},
        "processes": programs,
    }


PROCESS_ACTIONS = ("start", "stop", "restart")


def process(layout: Layout, action: str, name: str) -> dict[str, Any]:
    """Start, stop or restart one supervised program (e.g. stop a node's worker to see what
    the cluster does without it). A stopped program stays stopped until started."""
    programs = layout.supervisor.programs()
    if not programs:
        raise PvcError("no sandbox is running")
    if name not in programs:
        raise PvcError(f"no sandbox process {name!r} (one of {', '.join(sorted(programs))})")
    if action not in PROCESS_ACTIONS:
        raise PvcError(f"unknown action {action!r}")
    if action in ("stop", "restart"):
        layout.supervisor.stop_program(name)
    if action in ("start", "restart"):
        layout.supervisor.start_program(name)
    return layout.supervisor.programs()[name]


def flower_password(layout: Layout) -> str:
    return _read(layout.secret("flower.password")).strip()
