"""`pvc system install` / `uninstall`: pvc on a real node. A plan of steps, each said before
it is done (or only said, with --dry-run); `--root DIR` installs into DIR as if it were /.

Install: a venv under /opt/pvc with pvc in it, the sample configuration as /etc/pvc/pvc.yaml
and a Flower configuration (both 0600, never overwritten), the systemd units, enabled (daemon,
worker, tailer, pvc.target; Flower on coordinators) with `systemctl --root` (works without a
running systemd). pvc-flush.service is installed but not enabled: flushing at stop is a choice.
Uninstall: the units (disabled) and the venv go; the configuration and every VM stay.
"""
from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pvc.core import config as configmod
from pvc.core.errors import PvcError
from pvc.install import units

PROJECT = Path(__file__).resolve().parents[2]
SAMPLE_CONFIG = PROJECT / "config" / "pvc.sample.yaml"
UNIT_DIR = "etc/systemd/system"
FLOWER_CLIENT = "/etc/pvc/flower.yaml"
FLUSH_NOTICE = ("pvc-flush.service is installed but not enabled: a node that stops does not "
                "move its VMs away first, and one that starts does not take them back. To "
                "flush at stop and unflush at start: systemctl enable pvc-flush.service "
                "(bounded by node.stop_budget; see the README, Install on a real cluster)")


class InstallFailed(PvcError):
    """A step of the installation failed."""


@dataclass
class Step:
    what: str
    do: Callable[[], None]


@dataclass(frozen=True)
class Target:
    root: Path
    prefix: str = "/opt/pvc"
    python: str = "/usr/bin/python3"

    def on_disk(self, path: str) -> Path:
        """Where a path of the installed system is written now (under root)."""
        return self.root / path.lstrip("/")

    @property
    def venv(self) -> str:
        """The venv's path as the installed system sees it (whatever root is)."""
        return f"{self.prefix}/venv"

    @property
    def paths(self) -> units.Paths:
        """Paths as the installed system sees them: what units and scripts name."""
        return units.Paths(venv=self.venv, config="/etc/pvc/pvc.yaml",
                           flower_config="/etc/pvc/flowerconfig.py")


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        detail = (res.stderr.strip().splitlines() or ["failed"])[-1]
        raise InstallFailed(f"{' '.join(cmd[:4])}…: {detail}")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600, exist_ok=False)
    path.write_text(text)


# ---------------------------------------------------------------------- the node's choices

def _node_config(t: Target) -> configmod.Config | None:
    path = t.on_disk(t.paths.config)
    if not path.exists():
        return None
    try:
        return configmod.load(path, environ={})
    except PvcError:
        return None   # a sample not filled in yet: defaults until it is


def stop_budget(t: Target) -> float:
    cfg = _node_config(t)
    return cfg.node.stop_budget if cfg else configmod.NodeConfig().stop_budget


def is_coordinator(t: Target) -> bool:
    cfg = _node_config(t)
    return bool(cfg and cfg.node.name and cfg.node.name in cfg.cluster.coordinators)


def flower_config(address: str, port: int, user: str, password: str) -> str:
    """Flower's configuration: read-only, basic auth, one address."""
    return ("read_only = True\n"
            f"basic_auth = [{user + ':' + password!r}]\n"
            f"address = {address!r}\nport = {port}\npersistent = False\n")


def flower_client_config(t: Target) -> str:
    """A client configuration with just the broker, for Flower (which cannot read the
    node's files): from the node's configuration if it is filled in, else to be edited."""
    import yaml
    cfg = _node_config(t)
    if cfg is None:
        return ("# Flower's broker: the cluster's Redis (edit: host, port, password)\n"
                "cluster:\n  redis:\n    host: 127.0.0.1\n    port: 6379\n"
                "    password: \"\"\n")
    redis = cfg.cluster.redis
    broker = {"host": redis.host, "port": redis.port, "password": cfg.redis_password()}
    if redis.sentinels:
        broker.update(sentinels=redis.sentinels, master_name=redis.master_name)
    return "# Flower's broker: the cluster's Redis (from pvc.yaml at install)\n" + yaml.safe_dump(
        {"cluster": {"redis": broker}}, sort_keys=False)


# ---------------------------------------------------------------------- install

def install_plan(t: Target, source: Path = PROJECT) -> list[Step]:
    if not (units.SOURCE.is_dir() and SAMPLE_CONFIG.exists()):
        raise InstallFailed(f"run the installer from pvc's source tree (no {units.SOURCE} "
                            "here): git clone …; cd pvc; .venv/bin/pvc system install")
    venv = t.on_disk(t.venv)
    conf = t.on_disk(t.paths.config)
    flower = t.on_disk(t.paths.flower_config)
    flower_client = t.on_disk(FLOWER_CLIENT)
    unit_dir = t.on_disk(UNIT_DIR)
    steps = [
        # --copies: its interpreter is a file of the installed tree, not a link to the host's
        Step(f"create the venv {venv} ({t.python})",
             lambda: _run([t.python, "-m", "venv", "--copies", str(venv)])),
        Step(f"install pvc from {source} into it",
             lambda: _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--no-compile", str(source)])),
        Step(f"point the venv's scripts at {t.venv} and compile it for there",
             lambda: _settle_venv(t)),
    ]
    if conf.exists():
        steps.append(Step(f"keep the configuration {conf} (exists)", lambda: None))
    else:
        steps.append(Step(f"write the sample configuration to {conf} (0600: it may hold "
                          "secrets; edit it)",
                          lambda: _write_private(conf, SAMPLE_CONFIG.read_text())))
    if flower.exists():
        steps.append(Step(f"keep Flower's configuration {flower} (exists)", lambda: None))
    else:
        steps.append(Step(f"write Flower's configuration to {flower} (0600, a new password "
                          "for user pvc)",
                          lambda: _write_private(flower, flower_config(
                              "127.0.0.1", 5555, "pvc", secrets.token_urlsafe(16)))))
    if flower_client.exists():
        steps.append(Step(f"keep Flower's broker configuration {flower_client} (exists)",
                          lambda: None))
    else:
        steps.append(Step(f"write Flower's broker configuration to {flower_client} (0600; "
                          "Flower runs as its own user and gets only this and its basic auth)",
                          lambda: _write_private(flower_client, flower_client_config(t))))
    steps.append(Step(f"install the systemd units into {unit_dir}: {', '.join(units.names())}",
                      lambda: _write_units(t)))
    enabled = list(units.ENABLED)
    steps.append(Step(f"enable {', '.join(enabled)} (and pvc-flower.service on a coordinator)",
                      lambda: _enable(t, enabled + (list(units.COORDINATOR_ONLY)
                                                    if is_coordinator(t) else []))))
    return steps


def _settle_venv(t: Target) -> None:
    """A venv built under root names root everywhere (script headers, activate, compiled
    files) and pip records the checkout it came from: make it the venv of the installed
    system, as if root were /."""
    venv = t.on_disk(t.venv)
    built, final = str(venv).encode(), t.venv.encode()
    if built != final:
        for script in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
            if script.is_file() and not script.is_symlink():
                data = script.read_bytes()
                if built in data:
                    script.write_bytes(data.replace(built, final))
    for record in venv.glob("lib/python3*/site-packages/*.dist-info/direct_url.json"):
        record.unlink()   # the checkout's path: not the installed system's business
    _run([str(venv / "bin" / "python"), "-m", "compileall", "-q", "-f", "-s", str(t.root),
          "-p", "/", str(venv / "lib")])


def _write_units(t: Target) -> None:
    unit_dir = t.on_disk(UNIT_DIR)
    unit_dir.mkdir(parents=True, exist_ok=True)
    budget = stop_budget(t)
    for name in units.names():
        (unit_dir / name).write_text(units.render(name, t.paths, budget))


def _enable(t: Target, names: list[str]) -> None:
    _run(["systemctl", f"--root={t.root}", "enable", *names])


# ---------------------------------------------------------------------- uninstall

def uninstall_plan(t: Target) -> list[Step]:
    venv = t.on_disk(t.venv)
    unit_dir = t.on_disk(UNIT_DIR)
    present = [n for n in units.names() if (unit_dir / n).exists()]
    steps = []
    if present:
        steps.append(Step(f"disable {', '.join(present)}",
                          lambda: _run(["systemctl", f"--root={t.root}", "disable", *present])))
        steps.append(Step(f"remove the units from {unit_dir}",
                          lambda: _remove(unit_dir, present)))
    if venv.exists():
        steps.append(Step(f"remove the venv {venv}", lambda: shutil.rmtree(venv)))
    steps.append(Step(f"keep {t.on_disk('/etc/pvc')} (the configuration) and every VM "
                      "(defined and running as they are)", lambda: None))
    return steps


def _remove(directory: Path, names: list[str]) -> None:
    for name in names:
        (directory / name).unlink(missing_ok=True)


def carry_out(steps: list[Step], dry_run: bool, say: Callable[[str], None]) -> None:
    for step in steps:
        say(("would " if dry_run else "") + step.what)
        if not dry_run:
            step.do()
