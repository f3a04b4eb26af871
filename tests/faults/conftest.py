"""The fault tier: a real sandbox (ZooKeeper, Redis, libvirtds, daemons, workers, tailers, all
supervised), faults injected into its real processes (SIGSTOP, SIGKILL, restarts), and after
each fault the same question: does every VM run exactly once (asked of every libvirtd), and is
nothing stuck (no VM busy, no operation unfinished, the cluster healthy)?"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from pvc.hypervisor.adapter import LibvirtHypervisor
from pvc.sandbox import roles
from pvc.sandbox import sandbox as sb
from tests.e2e.conftest import Pvc, sandbox, wait_until

OFFSET = "1200"
NAME = "test-faults"
VMS = 24
SETTLE_TIMEOUT = 90     # bound of every "nothing stays stuck" wait


class Faults:
    """The sandbox under test, and the faults to inject into it."""

    def __init__(self, pvc: Pvc) -> None:
        self.pvc = pvc
        self.layout = sb.Layout(Path(pvc.env["PVC_SANDBOX_DIR"]), int(pvc.offset))
        state = sb.State.load(self.layout)
        assert state is not None
        self.nodes, self.kind = state.nodes, state.hypervisor
        self._hvs: dict[str, LibvirtHypervisor] = {}

    # ---------------------------------------------------------------- processes
    def pid(self, program: str) -> int:
        return int(self.layout.supervisor.info(program)["pid"])

    def freeze_on_change(self, c: Any, node: str, program: str,
                         grows: bool = True) -> threading.Event:
        """SIGSTOP to `program` as soon as `node` publishes more domains (or fewer): an
        operation in flight stops right after its first move. Set once frozen; the caller
        sends SIGCONT."""
        pid = self.pid(program)
        frozen = threading.Event()
        before = len(c.node(node).domains)

        def on_change(domains: dict | None, _version: int | None) -> bool:
            changed = domains is not None and (len(domains) > before if grows
                                               else len(domains) < before)
            if changed and not frozen.is_set():
                os.kill(pid, signal.SIGSTOP)
                frozen.set()
            return not frozen.is_set()

        c.store.watch_data(c.schema.node_field(node, "domains"), on_change)
        return frozen

    def signal(self, program: str, sig: int, group: bool = False) -> int:
        pid = self.pid(program)
        if group:
            os.killpg(os.getpgid(pid), sig)
        else:
            os.kill(pid, sig)
        return pid

    @contextmanager
    def paused(self, program: str) -> Iterator[int]:
        """The program is stopped (SIGSTOP) inside the block, and continued after it."""
        pid = self.signal(program, signal.SIGSTOP)
        try:
            yield pid
        finally:
            os.kill(pid, signal.SIGCONT)

    @contextmanager
    def zookeeper_paused(self) -> Iterator[None]:
        """Every member of the ensemble stopped (SIGSTOP) inside the block: ZooKeeper is
        silent; continued after it."""
        members = [p for p in self.layout.supervisor.programs() if p.startswith("zookeeper-")]
        pids = [self.signal(p, signal.SIGSTOP) for p in members]
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    def killed(self, program: str) -> None:
        """SIGKILL to the program and its children; the supervisor starts it again."""
        old = self.signal(program, signal.SIGKILL, group=True)
        self.layout.supervisor.wait_restarted(program, old)

    def dead(self, program: str) -> None:
        """SIGKILL to the program and its children, and left dead (as on a node whose power
        went): frozen first so that it runs no handler, the supervisor told to leave it."""
        pgid = os.getpgid(self.signal(program, signal.SIGSTOP))
        self.layout.supervisor.stop_program(program, wait=False)
        os.killpg(pgid, signal.SIGKILL)

    def restarts(self, program: str) -> int:
        return int(self.layout.supervisor.programs()[program]["restarts"])

    # ---------------------------------------------------------------- the truth
    def hv(self, node: str) -> LibvirtHypervisor:
        if node not in self._hvs:
            lv = self.layout.libvirtd(node, self.nodes.index(node) + 1)
            self._hvs[node] = LibvirtHypervisor(lv.uri(self.kind)).connect()
        return self._hvs[node]

    def where(self) -> dict[str, list[str]]:
        """Every domain by name, and the nodes whose libvirtd runs it (asked directly)."""
        found: dict[str, list[str]] = {}
        for node in self.nodes:
            for dom in self.hv(node).running().values():
                found.setdefault(dom.name, []).append(node)
        return found

    def vm_names(self, state: str = "start") -> list[str]:
        return sorted(v["name"] for v in self.pvc.json("vm", "list") if v["state"] == state)

    def problems(self) -> list[str]:
        """What is still wrong: VMs not running exactly once, busy VMs, unfinished
        operations, the cluster's own reasons for being degraded."""
        where = self.where()
        out = [f"{vm} runs on {where.get(vm, [])}" for vm in self.vm_names()
               if len(where.get(vm, [])) != 1]
        out += [f"{vm} runs on {nodes} but should not run"
                for vm in self.vm_names("stop") + self.vm_names("disable")
                if (nodes := where.get(vm))]
        vms = self.pvc.json("vm", "list")
        out += [f"{v['name']} busy with {v['operation']}" for v in vms if v["operation"]]
        ops = self.pvc.json("task", "list", "--limit", "1000")
        out += [f"operation {o['id']} {o['state']}" for o in ops
                if o["state"] in ("queued", "waiting-for-lock", "running")]
        status = self.pvc.cluster_status()
        return out + status["reasons"]

    def settled(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Every VM runs exactly once and nothing is stuck (within the bound)."""
        last: list[list[str]] = [[]]

        def ok() -> bool:
            last[0] = self.problems()
            return not last[0]

        try:
            wait_until("the cluster to settle", ok, timeout)
        except AssertionError:
            raise AssertionError(f"still wrong after {timeout}s: {last[0]}") from None

    def power(self, name: str) -> str:
        """What node name's BMC says of its power."""
        return str(self.pvc.json("node", "power", name, "status")["power"])

    def bring_back(self, *names: str, timeout: float = 90) -> None:
        """Power on, wait for the nodes' daemons and workers, unflush: the cluster as it
        was."""
        for name in names:
            self._hvs.pop(name, None)                   # its libvirtd is a new process
            if self.power(name) == "off":
                self.pvc("node", "power", name, "on")
        for name in names:
            # the killed worker's registration lives until its session expires: until the
            # new one registered, an unflush is refused (and changes nothing), so ask again
            wait_until(f"{name} unflushed", lambda: self._unflushed(name), timeout)
        self.settled()

    def _unflushed(self, name: str) -> bool:
        res = self.pvc("node", "unflush", name, "--wait", "--wait-timeout", "120", ok=False)
        if res.returncode == 0:
            return True
        assert "it cannot unflush itself" in res.stderr, res.stderr   # not up yet: refused
        return False

    def left_down(self) -> list[str]:
        """Nodes a test left powered off, fenced or flushed (a test that failed half-way)."""
        nodes = {n["name"]: n for n in self.pvc.json("node", "list")}
        return [name for name in self.nodes
                if nodes[name]["domain_state"] != "ready" or
                (nodes[name]["daemon_state"] != "run" and self.power(name) == "off")]

    @contextmanager
    def client(self) -> Iterator[Any]:
        """A connection to the sandbox's cluster, for watching it from the test."""
        from pvc.core.cluster import Cluster
        c = Cluster.connect(self.config())
        try:
            yield c
        finally:
            c.close()

    def record(self, op_id: str) -> dict[str, Any]:
        return self.pvc.json("task", "show", op_id)

    def submit(self, *args: str) -> str:
        """Run a command that submits an operation; returns the operation id."""
        out = self.pvc(*args, "--format", "json").stdout
        return str(json.loads(out)["id"])

    def finished(self, op_id: str, timeout: float = SETTLE_TIMEOUT) -> dict[str, Any]:
        res = self.pvc("task", "watch", op_id, "--wait-timeout", str(timeout), "--format",
                       "json", ok=False, timeout=timeout + 30)
        return json.loads(res.stdout) if res.stdout.strip() else self.record(op_id)

    def attack(self, what: str, target: str) -> dict[str, Any]:
        """What a stranger on the cluster network gets (tests/attacker.py, run in the
        sandbox's client namespace)."""
        return attack(self.layout.net.client, what, target)

    def log(self, program: str) -> str:
        node = program.split("-", 1)[1]
        role = program.split("-", 1)[0]
        return (self.layout.node_dir(node) / f"{role}.log").read_text(errors="replace")

    def config(self) -> Any:
        """The sandbox's client configuration."""
        from pvc.core import config as configmod
        return configmod.load(self.layout.client_config)

    def redis_master(self) -> str:
        """The broker's master's address, as the Sentinels say."""
        from pvc.core import redis_client
        return str(redis_client.status(self.config())["master"])

    def redis_master_node(self) -> str:
        return roles.redis_master_node(self.layout)

    def redis(self, *args: str, at: str = "") -> str:
        """A command to the broker's master, or to the Redis or Sentinel at host:port
        (redis-cli, from the host)."""
        password = self.layout.secret("redis.password").read_text().strip()
        host, port = (at or self.redis_master()).rsplit(":", 1)
        return subprocess.run(["redis-cli", "-h", host, "-p", port, "--no-auth-warning",
                               "-a", password, *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout

    @property
    def coordinators(self) -> list[str]:
        return roles.coordinators(self.layout)

    def zookeeper_leader(self) -> str:
        return roles.zookeeper_leader(self.layout)

    def make_redis_master(self, node: str) -> None:
        roles.make_redis_master(self.layout, node)

    def redis_blocked_reads(self, pid: int, node: str) -> int:
        """How many of process pid's Redis connections (from node's network namespace) are
        blocked in a read (BRPOP): a message arriving now would be handed to it even while
        the process is stopped."""
        redis = self.redis_master()
        ss = subprocess.run(["ip", "netns", "exec", self.layout.net.ns(node), "ss", "-tnpH",
                             "dst", redis], capture_output=True, text=True, check=True).stdout
        mine = {line.split()[3] for line in ss.splitlines() if f"pid={pid}," in line}
        return sum(1 for client in self.redis("CLIENT", "LIST").splitlines()
                   if _field(client, "addr") in mine and "b" in _field(client, "flags"))

    def close(self) -> None:
        for hv in self._hvs.values():
            hv.close()


def attack(namespace: str, what: str, target: str) -> dict[str, Any]:
    from pvc.network import ip
    from tests.conftest import PYTHON, ROOT
    res = subprocess.run(ip.in_netns(namespace, [PYTHON, "-m", "tests.attacker", what, target]),
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def _field(client: str, name: str) -> str:
    return next((kv.split("=", 1)[1] for kv in client.split() if kv.startswith(name + "=")),
                "")


@contextmanager
def settled_sandbox(name: str, offset: str, vms: int, database: bool = False,
                    env: dict[str, str] | None = None, nodes: int = 3, kind: str = "test",
                    storage: bool = False) -> Iterator[Faults]:
    """A sandbox (test driver unless kind says; the first three nodes coordinators),
    settled before it is handed out."""
    with sandbox(name, offset, kind, nodes, vms, env, database=database,
                 storage=storage) as pvc:
        f = Faults(pvc)
        try:
            f.settled()
            yield f
        finally:
            f.close()


@pytest.fixture(scope="session")
def faults() -> Iterator[Faults]:
    # three coordinators and a hypervisor: two nodes can die and leave ZooKeeper a quorum
    with settled_sandbox(NAME, OFFSET, VMS, nodes=4) as f:
        yield f


@pytest.fixture
def cluster_ok(faults: Faults) -> Iterator[Faults]:
    with kept_settled(faults) as f:
        yield f


@contextmanager
def kept_settled(f: Faults) -> Iterator[Faults]:
    """A test starts on a settled cluster and must leave it settled. A test that failed
    half-way may leave a node off or flushed: it is brought back first, so that one failure
    does not fail every test after it (the failure itself stands)."""
    f.settled()
    yield f
    down = f.left_down()
    if down:
        f.bring_back(*down)
    f.settled()


def until(what: str, condition: Callable[[], Any], timeout: float = SETTLE_TIMEOUT) -> Any:
    return wait_until(what, condition, timeout)


def elapsed(t0: float) -> float:
    return time.monotonic() - t0
