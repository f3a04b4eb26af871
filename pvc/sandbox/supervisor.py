"""The sandbox's process supervisor: supervisord (a well-kept supervisor from PyPI), doing for
the sandbox what systemd does for a production node: every process restarted when it dies,
with back-off while it fails to start, and stopped as a group.

pvc writes supervisord's configuration from the same `ProcessSpec`s the test fixtures start
directly, starts supervisord detached, then starts the programs one by one in dependency
order (each waited for by the sandbox's readiness checks), through supervisord's XML-RPC API on
a unix socket only root can open.
"""
from __future__ import annotations

import re
import shlex
import sys
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvc.sandbox import procs
from pvc.sandbox.services import ProcessSpec, write_private

START_RETRIES = 10      # failed starts (alive < 1 s) before supervisord gives up on a program
STOP_WAIT = 15          # seconds from SIGTERM to SIGKILL


@dataclass(frozen=True)
class Supervisor:
    dir: Path

    @property
    def conf(self) -> Path:
        return self.dir / "supervisord.conf"

    @property
    def socket(self) -> Path:
        return self.dir / "supervisor.sock"

    @property
    def log(self) -> Path:
        return self.dir / "supervisord.log"

    # ------------------------------------------------------------------ configuration
    def write(self, specs: list[ProcessSpec]) -> None:
        sections = [
            f"[unix_http_server]\nfile={self.socket}\nchmod=0700\n",
            f"[supervisord]\nlogfile={self.log}\npidfile={self.dir}/supervisord.pid\n"
            f"childlogdir={self.dir}\nnodaemon=true\nloglevel=info\n",
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
            f"[supervisorctl]\nserverurl=unix://{self.socket}\n",
        ]
        sections += [_program(spec) for spec in specs]
        write_private(self.conf, "\n".join(sections))

    # ------------------------------------------------------------------ life
    def start(self) -> int:
        """Start supervisord (its programs stay stopped until `start_program`)."""
        pid = procs.spawn([sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
                          self.dir / "supervisord.out")
        procs.wait_until("supervisord", self._answers, 20, pid, self.log)
        return pid

    def _answers(self) -> bool:
        try:
            return self._rpc().supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def start_program(self, name: str) -> int:
        """Start a program and return its PID once supervisord has it running."""
        try:
            self._rpc().supervisor.startProcess(name, True)
        except xmlrpc.client.Fault as e:
            raise procs.StartFailed(f"{name} did not start ({e.faultString}){self._tail(name)}")
        return int(self.info(name)["pid"])

    def _tail(self, name: str) -> str:
        """The last line its log has, to say why."""
        try:
            log = Path(self.info(name)["stdout_logfile"])
            lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
            return f": {lines[-1][:200]}" if lines else ""
        except (OSError, KeyError, xmlrpc.client.Fault):
            return ""

    def stop_program(self, name: str, wait: bool = True) -> None:
        try:
            self._rpc().supervisor.stopProcess(name, wait)
        except xmlrpc.client.Fault as e:
            if "NOT_RUNNING" not in e.faultString:
                raise

    def stop_programs(self, names: list[str]) -> None:
        """Stop several programs at once (each SIGTERM, SIGKILL after STOP_WAIT); returns
        once none of them runs."""
        for name in names:
            self.stop_program(name, wait=False)
        procs.wait_until(f"{', '.join(names)} to stop",
                         lambda: not any(self._running(n) for n in names), STOP_WAIT + 5)

    def _running(self, name: str) -> bool:
        return str(self.info(name)["statename"]) in ("RUNNING", "STARTING", "STOPPING",
                                                      "BACKOFF")

    def shutdown(self, pid: int) -> None:
        """Stop every program (SIGTERM to its group, SIGKILL after STOP_WAIT), then
        supervisord itself."""
        try:
            self._rpc().supervisor.stopAllProcesses(True)
            self._rpc().supervisor.shutdown()
        except (OSError, xmlrpc.client.Fault):
            pass
        procs.stop(pid, timeout=STOP_WAIT + 5)

    # ------------------------------------------------------------------ status
    def info(self, name: str) -> dict[str, Any]:
        return dict(self._rpc().supervisor.getProcessInfo(name))

    def programs(self) -> dict[str, dict[str, Any]]:
        """Every program: pid, state (RUNNING, BACKOFF, STOPPED, FATAL, …), restarts."""
        try:
            infos = self._rpc().supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Fault):
            return {}
        restarts = self.restarts()
        return {i["name"]: {"pid": i["pid"], "state": i["statename"],
                            "alive": i["statename"] == "RUNNING",
                            "restarts": restarts.get(i["name"], 0)} for i in infos}

    def restarts(self) -> dict[str, int]:
        """How often each program was started again after its first start."""
        spawned: dict[str, int] = {}
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return {}
        for name in _SPAWNED.findall(text):
            spawned[name] = spawned.get(name, 0) + 1
        return {name: count - 1 for name, count in spawned.items()}

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 60) -> int:
        """Until supervisord runs `name` again with a new PID (after it died)."""
        def renewed() -> bool:
            info = self.info(name)
            return info["statename"] == "RUNNING" and int(info["pid"]) not in (0, old_pid)

        procs.wait_until(f"{name} restarted", renewed, timeout)
        return int(self.info(name)["pid"])

    def _rpc(self) -> Any:
        from supervisor.xmlrpc import SupervisorTransport
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


_SPAWNED = re.compile(r"spawned: '([^']+)' with pid")


def _program(spec: ProcessSpec) -> str:
    lines = [f"[program:{spec.name}]",
             f"command={shlex.join(spec.command)}",
             "autostart=false", "autorestart=true", "startsecs=1",
             f"startretries={START_RETRIES}", "stopasgroup=true", "killasgroup=true",
             f"stopwaitsecs={STOP_WAIT}", "redirect_stderr=true",
             f"stdout_logfile={spec.log}", "stdout_logfile_maxbytes=20MB",
             "stdout_logfile_backups=1"]
    if spec.cwd is not None:
        lines.append(f"directory={spec.cwd}")
    if spec.private:
        lines.append("umask=077")
    if spec.env:
        pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(spec.env.items())
                         if _plain(k))
        lines.append(f"environment={pairs}")
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    return "\n".join(lines) + "\n"


def _plain(key: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key))


def _escape(value: str) -> str:
    # supervisord's environment values: double quotes, with % doubled (its own expansion)
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
