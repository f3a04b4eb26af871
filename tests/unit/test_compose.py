"""docker-compose.yml: valid for Compose (`docker-compose config`, no engine needed), and the
same cluster as the sandbox: its nodes, its ports (on 127.0.0.1 only), its secrets."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from pvc.core.config import DatabaseConfig
from pvc.sandbox import sandbox as sb
from tests.conftest import ROOT


def compose(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config",
                           *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def resolved() -> dict[str, Any]:
    res = compose()
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def test_compose_validates_silently() -> None:
    res = compose("-q")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_compose_catches_a_mistake(tmp_path: Path) -> None:
    broken = (ROOT / "docker-compose.yml").read_text().replace("privileged:", "privilegd:")
    (tmp_path / "docker-compose.yml").write_text(broken)
    res = subprocess.run(["docker-compose", "-f", str(tmp_path / "docker-compose.yml"),
                          "--project-directory", str(ROOT), "config", "-q"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "privilegd" in res.stderr


def test_the_nodes_are_the_sandboxs() -> None:
    services = resolved()["services"]
    nodes = {s["hostname"]: s for s in services.values() if s.get("hostname")}
    assert sorted(nodes) == sb.node_names(3)
    for name, svc in nodes.items():
        assert svc["environment"]["PVC_NODE_NAME"] == name
        assert svc["privileged"] is True
        assert svc["healthcheck"]["test"]
        assert {d: c["condition"] for d, c in svc["depends_on"].items()} == \
            {"zookeeper": "service_healthy", "redis": "service_healthy"}
        db = DatabaseConfig()
        assert {str(db.patroni_port), str(db.postgres_port)} <= set(svc["expose"])
    assert {"zookeeper", "redis", "flower"} <= set(services)


def test_ports_and_secrets_match_the_sandbox() -> None:
    data = resolved()
    layout = sb.Layout(Path("/run/pvc/sandbox"), 0)
    published = {}
    for name, svc in data["services"].items():
        for port in svc.get("ports", []):            # HOST_IP:PUBLISHED:TARGET/PROTO
            host_ip, public, _target = port.split("/")[0].split(":")
            assert host_ip == "127.0.0.1", (name, port)   # nothing beyond loopback
            published[name] = int(public)
    assert published == {"zookeeper": layout.zk_port, "redis": layout.redis_port,
                         "flower": layout.flower_port}
    files = {Path(s["file"]).name for s in data["secrets"].values()}
    sandbox_secrets = {layout.secret(n).name for n in
                       ("redis.password", "zookeeper.auth", "flower.password")}
    assert sandbox_secrets <= files
    assert "redis_password" in data["services"]["redis"]["secrets"][0]["source"]
    assert "--requirepass" in " ".join(data["services"]["redis"]["command"])
    assert "--appendonly yes" in " ".join(data["services"]["redis"]["command"])


def test_the_image_is_built_with_the_projects_setup_script() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM debian:12" in dockerfile
    assert "scripts/setup.sh" in dockerfile
    assert (ROOT / "docker" / "entrypoint.sh").stat().st_mode & 0o111
