"""A `test`-hypervisor sandbox for the whole e2e session, driven through the pvc CLI."""
from __future__ import annotations

import json
import subprocess
from typing import Any, Iterator

import pytest

from tests.conftest import run_pvc

SANDBOX_ENV = {"PVC_SANDBOX_DIR": "/run/pvc/test-sandbox"}
OFFSET = "1000"


class Pvc:
    """Runs pvc as an operator would, against the test sandbox."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, ok: bool = True, timeout: float = 120
                 ) -> subprocess.CompletedProcess:
        res = run_pvc(*args, env=self.env, timeout=timeout)
        assert "Traceback" not in res.stderr, res.stderr
        if ok:
            assert res.returncode == 0, f"pvc {' '.join(args)}: {res.stderr}"
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--format", "json").stdout)

    def error(self, *args: str) -> str:
        """Run a command that must fail with one clear line on stderr."""
        res = self(*args, ok=False)
        assert res.returncode != 0, res.stdout
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        return lines[0]


@pytest.fixture(scope="session")
def pvc() -> Iterator[Pvc]:
    p = Pvc(dict(SANDBOX_ENV))
    run_pvc("sandbox", "down", "--port-offset", OFFSET, env=SANDBOX_ENV)
    up = run_pvc("sandbox", "up", "--hypervisor", "test", "--nodes", "3", "--vms", "6",
                 "--port-offset", OFFSET, env=SANDBOX_ENV, timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        yield p
    finally:
        down = run_pvc("sandbox", "down", "--port-offset", OFFSET, env=SANDBOX_ENV)
        assert down.returncode == 0, down.stderr
