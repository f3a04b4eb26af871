"""Prometheus's HTTP API, as the tests read the sandbox's Prometheus (basic auth)."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from pvc.sandbox.monitoring import USER


class Client:
    """Prometheus's HTTP API as the sandbox's tests and `sandbox status` use it."""

    def __init__(self, port: int, password: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        request = urllib.request.Request(url, headers=self.headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def ready(self) -> bool:
        try:
            urllib.request.urlopen(urllib.request.Request(
                f"{self.base}/-/ready", headers=self.headers), timeout=2).close()
            return True
        except (urllib.error.URLError, OSError):
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        answer = self.get("/api/v1/query", query=expr)
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def targets(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/targets")["data"]["activeTargets"]  # type: ignore[no-any-return]
