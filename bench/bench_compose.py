"""The compose cluster from nothing, as a new user runs it: the base image (debootstrap +
docker import), the wheels, pvc's image (no layer cache), `docker-compose up` to a healthy
cluster with its demo guests running, a live migration between two node containers, and
`down -v`. On the Docker engine of scripts/docker.sh (started if none answers)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import record

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DOCKER_HOST": "unix:///run/pvc-docker/docker.sock",
       "PVC_SECRETS": "./docker/secrets", "PVC_FLOWER_PORT": "15755",
       "COMPOSE_PROJECT_NAME": "pvcbench"}
PVC = ["exec", "-T", "node1", "/opt/pvc/src/.venv/bin/pvc", "--config", "/etc/pvc/pvc.yaml"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=ROOT, env=ENV, capture_output=True, text=True,
                          check=check, timeout=1800)


def timed(*args: str) -> float:
    t0 = time.monotonic()
    run(*args)
    return round(time.monotonic() - t0, 1)


def poll(condition: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.5)   # polling the cluster's state through docker exec
    return time.monotonic() - t0


def pvc_json(*args: str) -> Any:
    res = run("docker-compose", *PVC, *args, "--format", "json", check=False)
    return json.loads(res.stdout) if res.stdout.strip().startswith(("{", "[")) else None


def main() -> None:
    figures: dict[str, Any] = {}
    figures["engine start s"] = timed("scripts/docker.sh", "engine")
    run("docker-compose", "down", "-v", "--remove-orphans", check=False)
    run("docker", "rmi", "-f", "pvc:dev", "pvc-base:12", check=False)
    run("docker", "builder", "prune", "-af", check=False)
    figures["base image s"] = timed("scripts/docker.sh", "base")
    figures["wheels s (cached if unchanged)"] = timed("scripts/docker.sh", "wheels")
    run("docker/make-secrets.sh")
    figures["image build s (no cache)"] = timed("docker-compose", "build", "--force-rm", "-q")
    t0 = time.monotonic()
    run("docker-compose", "up", "-d")
    figures["up -d returns s (nodes healthy)"] = round(time.monotonic() - t0, 1)

    def ready() -> bool:
        status = pvc_json("cluster", "status")
        vms = pvc_json("vm", "list") or []
        return bool(status and status.get("healthy")) and len(vms) == 2 and \
            all(v["observed"] == "running" for v in vms)

    poll(ready, 300)
    figures["up to healthy, guests running s"] = round(time.monotonic() - t0, 1)
    vm = {v["name"]: v for v in pvc_json("vm", "list")}["demo1"]
    target = next(n for n in ("hv1", "hv2", "hv3") if n not in vm["running_on"])
    t0 = time.monotonic()
    out = run("docker-compose", *PVC, "vm", "migrate", "demo1", "--target", target,
              "--wait").stdout
    figures["live migration between containers s (CLI)"] = round(time.monotonic() - t0, 1)
    found = re.search(r"\(live, ([0-9.]+)s, downtime (\d+) ms\)", out)
    if found:
        figures["migration itself s"] = float(found.group(1))
        figures["downtime ms"] = int(found.group(2))
    figures["down -v s"] = timed("docker-compose", "down", "-v", "--remove-orphans")
    record("compose: the cluster from nothing (docker-compose.yml)", figures)


if __name__ == "__main__":
    main()
