"""Fixtures: real servers started by the project's own code (pvc.sandbox.services), once per
session, and stopped by PID at the end. Each test gets a fresh ZooKeeper chroot."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from pvc.core.config import ClusterConfig, Config, NodeConfig, RedisConfig, ZooKeeperConfig

ROOT = Path(__file__).resolve().parent.parent
SERVICES_DIR = Path(os.environ.get("PVC_TEST_DIR", "/run/pvc/test-services"))
ZK_PORT = 12181
REDIS_PORT = 16379


class Services:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.pids: dict[str, int] = {}
        self.libvirtds: dict[str, object] = {}
        self.redis_password_file = base / "secrets" / "redis.password"
        self.zk_auth_file = base / "secrets" / "zookeeper.auth"
        # another identity the ZooKeeper server knows (as Patroni's is in production)
        self.zk_other_auth_file = base / "secrets" / "other.auth"

    @property
    def zk_hosts(self) -> str:
        return f"127.0.0.1:{ZK_PORT}"

    @property
    def zk_auth(self) -> tuple[str, str]:
        """pvc's ZooKeeper login (user, password)."""
        user, _, password = self.zk_auth_file.read_text().strip().partition(":")
        return user, password

    def libvirt_uri(self, name: str, kind: str = "test") -> str:
        """A libvirtd of its own for name, started on first use."""
        from pvc.sandbox import services
        key = f"{name}-{kind}"
        if key not in self.libvirtds:
            index = len(self.libvirtds) + 1
            lo = 51000 + 10 * index
            lv = services.Libvirtd(self.base / "libvirt" / key, index, (lo, lo + 9))
            pid = services.start_libvirtd(lv)
            self.pids[f"libvirtd-{key}"] = pid
            services.wait_libvirtd(lv, pid, kind)
            self.libvirtds[key] = (lv, pid, kind)
        lv, _pid, kind = self.libvirtds[key]  # type: ignore[misc]
        return lv.uri(kind)  # type: ignore[attr-defined]

    def stop(self) -> None:
        from pvc.sandbox import procs, services
        for lv, pid, kind in self.libvirtds.values():  # type: ignore[misc]
            services.stop_libvirtd(lv, pid, kind)
        for name, pid in self.pids.items():
            if not name.startswith("libvirtd-"):
                procs.stop(pid)
        for pid in procs.processes_mentioning(str(self.base) + "/"):
            procs.stop(pid)


TIERS = ("unit", "integration", "e2e", "faults", "compose")


def tier_of(item: pytest.Item) -> str:
    return Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test carries its tier's marker (its directory's name): `-m unit` and the like
    select a tier whatever a module declares. The compose tier runs last: its images are made
    in the background meanwhile (tests/compose/conftest.py)."""
    for item in items:
        tier = tier_of(item)
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
    items.sort(key=lambda item: tier_of(item) == "compose")   # stable: the others keep order


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if any(tier_of(item) == "compose" for item in session.items) and \
            any(tier_of(item) != "compose" for item in session.items):
        from tests.compose.conftest import prepare_in_background
        prepare_in_background(session.config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The Docker engine the compose tier started is stopped (by its PID), whatever ended
    the session."""
    from tests.compose.conftest import stop_what_was_started
    stop_what_was_started(session.config)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    from pvc.sandbox import services as svc
    if SERVICES_DIR.exists():
        shutil.rmtree(SERVICES_DIR)
    SERVICES_DIR.mkdir(parents=True, mode=0o700)
    s = Services(SERVICES_DIR)
    try:
        password = svc.write_secret(s.redis_password_file)
        users = {"pvc": uuid.uuid4().hex, "other": uuid.uuid4().hex}
        svc.write_secret(s.zk_auth_file, f"pvc:{users['pvc']}")
        svc.write_secret(s.zk_other_auth_file, f"other:{users['other']}")
        s.pids["zookeeper"] = svc.start_zookeeper(SERVICES_DIR / "zookeeper", ZK_PORT, users)
        s.pids["redis"] = svc.start_redis(SERVICES_DIR / "redis", REDIS_PORT, password)
        yield s
    finally:
        s.stop()
        shutil.rmtree(SERVICES_DIR, ignore_errors=True)


def make_config(services: Services, root: str, node: str = "", kind: str = "test",
                **node_kw: object) -> Config:
    cluster = ClusterConfig(
        name="test", coordinators=["hv1", "hv2", "hv3"],
        zookeeper=ZooKeeperConfig(hosts=services.zk_hosts, root=root, timeout=5.0,
                                  session_timeout=2.0, auth_file=str(services.zk_auth_file)),
        redis=RedisConfig(port=REDIS_PORT, password_file=str(services.redis_password_file)))
    if not node:
        return Config(cluster=cluster)
    n = NodeConfig(name=node, libvirt_uri=services.libvirt_uri(node, kind), domain_type=kind,
                   console_log_directory=str(SERVICES_DIR / "console" / node),
                   keepalive_interval=0.5)
    return Config(cluster=cluster, node=replace(n, **node_kw))  # type: ignore[arg-type]


@pytest.fixture
def zk_root() -> str:
    """A fresh ZooKeeper chroot for one test."""
    return f"/test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client_config(services: Services, zk_root: str) -> Config:
    return make_config(services, zk_root)


@pytest.fixture
def cluster(client_config: Config) -> Iterator[object]:
    from pvc.core.cluster import Cluster
    c = Cluster.connect(client_config)
    yield c
    c.close()


def write_config(cfg: Config, path: Path) -> Path:
    from pvc.core import config as configmod
    configmod.write(cfg, path)
    return path


def run_pvc(*args: str, env: dict[str, str] | None = None,
            check: bool | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the pvc CLI as an operator would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([str(ROOT / ".venv" / "bin" / "pvc"), *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, check=bool(check))


PYTHON = sys.executable
