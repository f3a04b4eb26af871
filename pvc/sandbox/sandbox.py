"""`pvc sandbox`: a whole pvc cluster on one machine.

One ZooKeeper, one Redis, one Flower; per simulated node its own libvirtd (qemu: real TCG
guests; test: libvirt's test driver), node daemon, Celery worker and console tailer. Demo VMs are defined with a
node and desired state `start`, so each node daemon's start-up reconcile starts its share: the
same code path as a production node coming up.

Everything lives under one directory (default /run/pvc/sandbox, $PVC_SANDBOX_DIR); its
client.yaml is what plain `pvc` commands use while the sandbox is up. Every process started is
recorded in state.json by PID, and `down` stops exactly those (then sweeps for strays).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pvc.core import config as configmod
from pvc.core.config import (
    ClusterConfig,
    Config,
    MigrationConfig,
    NodeConfig,
    OperationsConfig,
    RedisConfig,
    ZooKeeperConfig,
)
from pvc.core.errors import PvcError
from pvc.core.states import DaemonState
from pvc.sandbox import guest, procs, services
from pvc.sandbox.services import Libvirtd
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


@dataclass
class State:
    hypervisor: str
    nodes: list[str]
    port_offset: int
    started: float
    pids: dict[str, int] = field(default_factory=dict)
    demo_vms: list[str] = field(default_factory=list)

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


def cluster_config(layout: Layout, nodes: list[str]) -> ClusterConfig:
    return ClusterConfig(
        name="sandbox", coordinators=nodes[:3],
        zookeeper=ZooKeeperConfig(hosts=f"127.0.0.1:{layout.zk_port}", session_timeout=4.0),
        redis=RedisConfig(port=layout.redis_port,
                          password_file=str(layout.secret("redis.password"))),
        migration=MigrationConfig(timeout=120.0),
        operations=OperationsConfig(shutdown_timeout=15.0),
    )


def node_config(layout: Layout, cluster: ClusterConfig, name: str, index: int,
                kind: str) -> Config:
    lv = layout.libvirtd(name, index)
    node = NodeConfig(name=name, libvirt_uri=lv.uri(kind), domain_type=kind,
                      console_log_directory=str(layout.console_dir(name)),
                      keepalive_interval=2.0)
    return Config(cluster=cluster, node=node)


def demo_xml(name: str, kind: str, index: int) -> str:
    """A demo VM as an operator would write it for KVM; the sandbox runs it on its kind."""
    memory = 128 if kind == "qemu" else 16
    kernel, initrd = guest.paths()
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
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='pty'>
      <log file='/var/log/pvc/console/{name}.log' append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
"""


# ------------------------------------------------------------------------------ up

def running_state(layout: Layout) -> State | None:
    """The sandbox's state if any of its processes still runs."""
    state = State.load(layout)
    if state and any(procs.alive(pid) for pid in state.pids.values()):
        return state
    return None


def up(layout: Layout, nodes: int = 3, vms: int | None = None, kind: str = "qemu",
       say: Say = print) -> tuple[State, bool]:
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
    layout.dir.mkdir(parents=True, mode=0o700)
    names = node_names(nodes)
    state = State(hypervisor=kind, nodes=names, port_offset=layout.port_offset,
                  started=time.time())
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
    flower_pw = services.write_secret(layout.secret("flower.password"))
    libvirtds = {n: layout.libvirtd(n, i + 1) for i, n in enumerate(names)}
    for n, lv in libvirtds.items():   # slow to start: launch them first, wait later
        state.pids[f"libvirtd-{n}"] = services.start_libvirtd(lv)
    state.save(layout)
    state.pids["zookeeper"] = services.start_zookeeper(layout.dir / "zookeeper", layout.zk_port)
    state.save(layout)
    step(f"ZooKeeper on 127.0.0.1:{layout.zk_port}")
    state.pids["redis"] = services.start_redis(layout.dir / "redis", layout.redis_port, redis_pw)
    state.save(layout)
    step(f"Redis on 127.0.0.1:{layout.redis_port} (password in {layout.secret('redis.password')})")
    for n, lv in libvirtds.items():
        services.wait_libvirtd(lv, state.pids[f"libvirtd-{n}"], kind)
    step(f"{len(names)} libvirtd ({kind}) up")

    cluster = cluster_config(layout, names)
    client = Config(cluster=cluster)
    configmod.write(client, layout.client_config)
    for i, n in enumerate(names):
        layout.console_dir(n).mkdir(parents=True, exist_ok=True)
        configmod.write(node_config(layout, cluster, n, i + 1, kind), layout.node_config(n))
    state.demo_vms = _define_demo_vms(client, names, vm_count, kind)
    state.save(layout)

    py = sys.executable
    for n in names:
        cfg = str(layout.node_config(n))
        state.pids[f"node-{n}"] = procs.spawn([py, "-m", "workers.node_daemon", "--config", cfg],
                                              layout.node_dir(n) / "node.log")
        state.pids[f"worker-{n}"] = procs.spawn([py, "-m", "workers.worker", "--config", cfg],
                                                layout.node_dir(n) / "worker.log")
        state.pids[f"tailer-{n}"] = procs.spawn([py, "-m", "workers.tailer", "--config", cfg],
                                                layout.node_dir(n) / "tailer.log")
    state.save(layout)
    state.pids["flower"] = services.start_flower(layout.dir / "flower", layout.flower_port,
                                                 FLOWER_USER, flower_pw, layout.client_config)
    state.save(layout)
    step(f"Flower on http://127.0.0.1:{layout.flower_port}")
    _wait_cluster_ready(layout, state, client)
    if kind == "qemu" and state.demo_vms:   # guests run: QEMU's capabilities are probed
        services.save_caps_seed(next(iter(libvirtds.values())))
    step(f"{len(names)} nodes running, {len(state.demo_vms)} demo VMs running, workers ready")


def _define_demo_vms(client: Config, names: list[str], count: int, kind: str) -> list[str]:
    from pvc.core.cluster import Cluster
    cluster = Cluster.connect(client)
    defined = []
    try:
        for i in range(count):
            name = f"demo{i + 1}"
            vm = definition.define(cluster, demo_xml(name, kind, i), node=names[i % len(names)],
                                   initial_state="start", allow_unknown_nodes=True)
            defined.append(vm.name)
    finally:
        cluster.close()
    return defined


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
STOP_ORDER = ("flower", "tailer-", "worker-", "node-", "libvirtd-", "redis", "zookeeper")


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
    for prefix in STOP_ORDER:
        for name, pid in list(state.pids.items()):
            if not name.startswith(prefix):
                continue
            if name.startswith("libvirtd-"):
                node = name.split("-", 1)[1]
                lv = layout.libvirtd(node, state.nodes.index(node) + 1)
                services.stop_libvirtd(lv, pid, state.hypervisor)
            elif procs.stop(pid, timeout=15):
                say(f"{name} (pid {pid}) did not stop in time and was killed")
    strays = procs.processes_mentioning(str(layout.dir) + "/")
    for pid in strays:
        say(f"stopping stray process {pid}")
        procs.stop(pid, timeout=5)


# ------------------------------------------------------------------------------ status

def status(layout: Layout) -> dict[str, Any]:
    state = State.load(layout)
    if state is None:
        return {"running": False, "dir": str(layout.dir)}
    pids = {name: {"pid": pid, "alive": procs.alive(pid)} for name, pid in state.pids.items()}
    return {
        "running": any(p["alive"] for p in pids.values()),
        "healthy": all(p["alive"] for p in pids.values()),
        "dir": str(layout.dir),
        "hypervisor": state.hypervisor,
        "nodes": state.nodes,
        "demo_vms": state.demo_vms,
        "started": state.started,
        "client_config": str(layout.client_config),
        "zookeeper": f"127.0.0.1:{layout.zk_port}",
        "redis": f"127.0.0.1:{layout.redis_port}",
        "flower": {"url": f"http://127.0.0.1:{layout.flower_port}", "user": FLOWER_USER,
                   "password_file": str(layout.secret("flower.password"))},
        "processes": pids,
    }


def flower_password(layout: Layout) -> str:
    return _read(layout.secret("flower.password")).strip()
