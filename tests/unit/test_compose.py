"""docker-compose.yml: valid for Compose (`docker-compose config`, no engine needed), and the
same cluster as the sandbox: its nodes, its ports (on 127.0.0.1 only), its secrets."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pvc.core.config import DatabaseConfig
from pvc.sandbox import sandbox as sb
from tests.conftest import ROOT

SECRETS = "./docker/secrets"


def compose(*args: str, secrets: str | None = SECRETS) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PVC_SECRETS"}
    if secrets is not None:
        env["PVC_SECRETS"] = secrets
    with tempfile.NamedTemporaryFile("w", suffix=".env") as no_env:   # not the checkout's .env
        return subprocess.run(["docker-compose", "--env-file", no_env.name, "-f",
                               str(ROOT / "docker-compose.yml"), "config", *args],
                              capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def resolved() -> dict[str, Any]:
    res = compose()
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def test_compose_validates_silently() -> None:
    res = compose("-q")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_compose_catches_a_mistake(tmp_path: Path) -> None:
    broken = (ROOT / "docker-compose.yml").read_text().replace("cap_add:", "cap_ad:")
    (tmp_path / "docker-compose.yml").write_text(broken)
    (tmp_path / "empty.env").write_text("")
    res = subprocess.run(["docker-compose", "--env-file", str(tmp_path / "empty.env"), "-f",
                          str(tmp_path / "docker-compose.yml"), "--project-directory", str(ROOT),
                          "config", "-q"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PVC_SECRETS": SECRETS})
    assert res.returncode != 0 and "cap_ad" in res.stderr


def test_the_nodes_are_the_sandboxs() -> None:
    """Three coordinator nodes, and the control plane on them: no ZooKeeper or Redis of its
    own that would outlive a node."""
    services = resolved()["services"]
    nodes = {s["hostname"]: s for s in services.values() if s.get("hostname")}
    assert sorted(nodes) == sb.node_names(3)
    addresses = []
    for name, svc in nodes.items():
        env = svc["environment"]
        assert env["PVC_NODE_NAME"] == name
        assert env["PVC_COORDINATORS"].split(",") == sorted(nodes)
        addresses.append(env["PVC_NODE_ADDRESS"])
        assert "privileged" not in svc and svc["init"] is True
        assert {"SYS_ADMIN", "NET_ADMIN"} <= set(svc["cap_add"])
        assert svc["healthcheck"]["test"]
        db = DatabaseConfig()
        assert {"2181", "2888", "3888", "6379", "26379", str(db.patroni_port),
                str(db.postgres_port)} <= set(svc["expose"])
    assert all(svc["environment"]["PVC_COORDINATOR_ADDRESSES"].split(",") == addresses
               for svc in nodes.values())
    assert set(services) == {*(n for n in services if n.startswith("node")), "flower", "init"}


def test_ports_and_secrets_match_the_sandbox() -> None:
    data = resolved()
    layout = sb.Layout(Path("/run/pvc/sandbox"), 0)
    published = {}
    for name, svc in data["services"].items():
        for port in svc.get("ports", []):            # HOST_IP:PUBLISHED:TARGET/PROTO
            host_ip, public, _target = port.split("/")[0].split(":")
            assert host_ip == "127.0.0.1", (name, port)   # nothing beyond loopback
            published[name] = int(public)
    assert published == {"flower": layout.flower_port}
    files = {Path(s["file"]).name for s in data["secrets"].values()}
    sandbox_secrets = {layout.secret(n).name for n in
                       ("redis.password", "zookeeper.auth", "flower.password")}
    assert sandbox_secrets <= files


def test_a_coordinator_container_runs_the_control_plane(tmp_path: Path,
                                                        monkeypatch: Any) -> None:
    """A node container's programs (workers/container.py), from the sandbox's own specs: on
    a coordinator a ZooKeeper member, a guarded Redis replica of the first coordinator, a
    Sentinel, Patroni and PowerDNS besides libvirt and pvc's three; elsewhere only those."""
    from pvc.core import config
    from workers import container
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in (("redis_password", "r"), ("zookeeper_auth", "pvc:z"),
                        ("patroni_zookeeper_auth", "patroni:p"),
                        ("patroni_rest_auth", "patroni:q"), ("database_password", "d"),
                        ("dns_password", "n")):
        (secrets / name).write_text(value + "\n")
    monkeypatch.setattr(container, "SECRETS", secrets)
    monkeypatch.setattr(container, "STATE", tmp_path / "state")
    monkeypatch.setenv("PVC_COORDINATORS", "hv1,hv2,hv3")
    monkeypatch.setenv("PVC_COORDINATOR_ADDRESSES", "10.0.0.1,10.0.0.2,10.0.0.3")
    cluster = {"coordinators": ["hv1", "hv2", "hv3"], "floating_ip": "10.0.0.250/24",
               "zookeeper": {"hosts": "10.0.0.1:2181,10.0.0.2:2181,10.0.0.3:2181"}}

    def programs(name: str, address: str) -> dict[str, Any]:
        cfg = config.parse({"cluster": cluster, "node": {"name": name,
                                                          "cluster_address": address}},
                           environ={})
        return {spec.name: spec for spec in container.node_specs(cfg)}

    second = programs("hv2", "10.0.0.2")
    assert set(second) == {"virtlogd", "libvirtd", "zookeeper", "redis", "sentinel",
                           "patroni", "pdns", "node", "worker", "tailer"}
    assert "replicaof 10.0.0.1 6379" in (tmp_path / "state" / "redis" / "redis.conf"
                                         ).read_text()
    assert set(programs("hv4", "10.0.0.4")) == {"virtlogd", "libvirtd", "node", "worker",
                                                "tailer"}
    assert container.STOP_ORDER.index("node") < container.STOP_ORDER.index("zookeeper")


def test_the_image_is_built_with_the_projects_setup_script() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM pvc-base:12" in dockerfile
    assert "scripts/setup.sh" in dockerfile
    assert (ROOT / "docker" / "entrypoint.sh").stat().st_mode & 0o111


def test_compose_without_its_secrets_fails_loudly() -> None:
    res = compose("-q", secrets=None)
    assert res.returncode != 0 and "run docker/make-secrets.sh first" in res.stderr


def test_secrets_reach_the_containers_only_at_run_time() -> None:
    data = resolved()
    for name, secret in data["secrets"].items():
        assert Path(secret["file"]).parent == ROOT / "docker" / "secrets", name
    nodes = [s for s in data["services"].values() if s.get("hostname")]
    for svc in nodes:
        assert {"patroni_zookeeper_auth", "patroni_rest_auth"} <= \
            {s["source"] for s in svc["secrets"]}
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert "rest_auth_file: /run/secrets/patroni_rest_auth" in entrypoint


def build_context(root: Path) -> set[str]:
    """The files `docker build` would send from root: .dockerignore read by Docker's own
    Python client (docker-py's exclude_paths), not by a pattern matcher of ours."""
    from docker.utils.build import exclude_paths
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return set(exclude_paths(str(root), patterns))


LEAKS = (".venv/", ".git/", "docker/secrets/", "build/", ".pytest_cache/")


def test_the_build_context_holds_no_secret_and_no_venv(tmp_path: Path) -> None:
    for f in [".venv/bin/python", "docker/secrets/redis.password", "docker/secrets/zookeeper.auth",
              ".env", "pvc/core/config.py", "pvc.egg-info/PKG-INFO", "build/lib/x.py",
              "pvc/__pycache__/x.pyc", "somewhere/db.password", "Dockerfile"]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    sent = {f for f in build_context(tmp_path) if (tmp_path / f).is_file()}
    assert sent == {"pvc/core/config.py", "Dockerfile"}
    real = build_context(ROOT)
    assert "scripts/setup.sh" in real and "Dockerfile" in real
    assert [f for f in real if f.startswith(LEAKS) or f == ".env"
            or f.endswith((".password", ".auth", ".jaas"))] == []
