"""The sandbox's Prometheus (Debian's package): it scrapes pvc's endpoint at the floating IP
(with the bearer token) and each coordinator's Patroni, keeps a day of figures, and serves its
UI and query API on 127.0.0.1 behind basic auth (user `pvc`, a bcrypt hash in its web config).

It runs on the host, like an operator's Prometheus outside the cluster: a node's fault does not
take the monitoring down with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from pvc.sandbox.services import ProcessSpec, write_private, write_secret

BINARY = "/usr/bin/prometheus"
USER = "pvc"
SCRAPE_INTERVAL = "2s"    # a change shows within seconds (and the sandbox is small)


@dataclass(frozen=True)
class Targets:
    pvc: str                        # host:port of pvc's endpoint (the floating IP)
    pvc_token_file: Path
    patroni: list[str]              # host:port of each coordinator's Patroni ([]: none)
    patroni_user: str = ""
    patroni_password_file: Path | None = None


def spec(base: Path, port: int, password: str, targets: Targets) -> ProcessSpec:
    base.mkdir(parents=True, exist_ok=True)
    write_private(base / "prometheus.yml", yaml.safe_dump(scrape_config(targets),
                                                          sort_keys=False))
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    write_private(base / "web.yml", yaml.safe_dump({"basic_auth_users": {USER: hashed}}))
    command = [BINARY, f"--config.file={base / 'prometheus.yml'}",
               f"--web.config.file={base / 'web.yml'}",
               f"--storage.tsdb.path={base / 'data'}", "--storage.tsdb.retention.time=1d",
               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    return ProcessSpec("prometheus", command, base / "prometheus.log", cwd=base)


def scrape_config(t: Targets) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = [{
        "job_name": "pvc",
        "authorization": {"type": "Bearer", "credentials_file": str(t.pvc_token_file)},
        "static_configs": [{"targets": [t.pvc]}],
    }]
    if t.patroni:
        patroni: dict[str, Any] = {"job_name": "patroni",
                                   "static_configs": [{"targets": t.patroni}]}
        if t.patroni_password_file:
            patroni["basic_auth"] = {"username": t.patroni_user,
                                     "password_file": str(t.patroni_password_file)}
        jobs.append(patroni)
    return {"global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
            "scrape_configs": jobs}


def password_file_of(auth_file: Path, into: Path) -> tuple[str, Path]:
    """(user, a file holding only the password) from a `user:password` file: Prometheus
    reads a password file whole."""
    user, _, password = auth_file.read_text().strip().partition(":")
    write_secret(into, password)
    return user, into
