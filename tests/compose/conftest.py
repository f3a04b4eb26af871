"""The compose tier: docker-compose.yml built and run for real, on a Docker engine of pvc's own
(scripts/docker.sh starts one on its own socket when none answers there, and stops what it
started). Everything runs under one compose project, removed with `down -v` at the end."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import UNAVAILABLE, ServerBusy
from tests.waiting import until

PROJECT = "pvctest"
DOCKER_HOST = "unix:///run/pvc-docker/docker.sock"
FLOWER_PORT = "15655"     # not the sandbox's 5555: both may be up at once
ENV = {**os.environ, "DOCKER_HOST": DOCKER_HOST, "PVC_SECRETS": "./docker/secrets",
       "PVC_FLOWER_PORT": FLOWER_PORT, "COMPOSE_PROJECT_NAME": PROJECT}
PVC = ["/opt/pvc/src/.venv/bin/pvc", "--config", "/etc/pvc/pvc.yaml"]


def run(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(list(args), cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=timeout)
    if check:
        assert res.returncode == 0, f"{' '.join(args)}: {res.stdout[-2000:]}{res.stderr[-2000:]}"
    return res


class Compose:
    """The compose cluster, through docker-compose and pvc inside its containers."""

    def __call__(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        return run("docker-compose", *args, **kw)

    def pvc(self, *args: str, service: str = "node1", check: bool = True
            ) -> subprocess.CompletedProcess:
        res = self("exec", "-T", service, *PVC, *args, check=False)
        if check and res.returncode == UNAVAILABLE:   # ZooKeeper electing: a poll asks again
            raise ServerBusy(f"pvc {' '.join(args)}: {res.stderr}")
        if check:
            assert res.returncode == 0, f"pvc {' '.join(args)}: {res.stdout[-2000:]}" \
                                        f"{res.stderr[-2000:]}"
        return res

    def json(self, *args: str, service: str = "node1") -> Any:
        return json.loads(self.pvc(*args, "--format", "json", service=service).stdout)

    def status(self) -> dict[str, Any]:
        res = self.pvc("cluster", "status", "--format", "json", check=False)
        return json.loads(res.stdout) if res.stdout.startswith("{") else {}

    def running(self, service: str) -> list[str]:
        """The domains one node container's libvirtd runs (asked of libvirt itself)."""
        out = self("exec", "-T", service, "virsh", "-c", "qemu:///system", "list", "--name",
                   check=False).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def where(self, vm: str) -> list[str]:
        return [s for s in ("node1", "node2", "node3") if vm in self.running(s)]

    def project_leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={PROJECT}"
        found = []
        for kind in ("container", "network", "volume"):
            out = run("docker", kind, "ls", "-q", *(["-a"] if kind == "container" else []),
                      "--filter", label).stdout.split()
            found += [f"{kind} {x}" for x in out]
        return found


@pytest.fixture(scope="package")
def compose(request: pytest.FixtureRequest) -> Iterator[Compose]:
    if PREPARING not in request.config.stash:   # not made in the background meanwhile
        request.config.stash[ENGINE_WAS_RUNNING] = engine_running()
        run("scripts/docker.sh", "prepare", timeout=1800)
    else:
        prepared = request.config.stash[PREPARING]
        assert prepared.wait(timeout=1800) == 0, PREPARE_LOG.read_text()[-3000:]
    c = Compose()
    c("down", "-v", "--remove-orphans", check=False)   # what an interrupted run left
    try:
        c("up", "-d", timeout=600)
        until("the init container's demo guests", lambda: _init_done(c), 300, interval=1)
        until("the compose cluster healthy", lambda: c.status().get("healthy"), 180,
              interval=1)
        yield c
    finally:
        c("down", "-v", "--remove-orphans", timeout=300, check=False)
        leftovers = c.project_leftovers()
    assert leftovers == []


def engine_running() -> bool:
    return run("docker", "version", check=False).returncode == 0


def prepare_in_background(config: pytest.Config) -> None:
    """Start making the engine, the base image and pvc's image while the other tiers run
    (tests/conftest.py calls this when compose tests are selected; they run last)."""
    config.stash[ENGINE_WAS_RUNNING] = engine_running()
    PREPARE_LOG.parent.mkdir(parents=True, exist_ok=True)
    config.stash[PREPARING] = subprocess.Popen(
        ["scripts/docker.sh", "prepare"], cwd=ROOT, env=ENV,
        stdout=PREPARE_LOG.open("w"), stderr=subprocess.STDOUT)


def stop_what_was_started(config: pytest.Config) -> None:
    preparing = config.stash.get(PREPARING, None)
    if preparing is not None and preparing.poll() is None:
        preparing.terminate()
        preparing.wait(60)
    if config.stash.get(ENGINE_WAS_RUNNING, True) is False:
        run("scripts/docker.sh", "stop", check=False)


ENGINE_WAS_RUNNING = pytest.StashKey[bool]()
PREPARING = pytest.StashKey["subprocess.Popen[bytes]"]()
PREPARE_LOG = Path("/run/pvc-docker/prepare.log")


def _init_done(c: Compose) -> bool:
    out = c("ps", "-q", "init").stdout.strip()
    if not out:
        return False
    state = run("docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                out).stdout.split()
    assert state != ["exited", "1"], c("logs", "init").stdout[-3000:]
    return state == ["exited", "0"]


def wait(what: str, condition: Any, timeout: float = 120) -> Any:
    """condition()'s first true value; a server that did not answer (pvc's exit 4, as when
    a stopped container took ZooKeeper's leader with it) is asked again."""
    return until(what, condition, timeout, interval=0.5, tolerate=(ServerBusy,))

