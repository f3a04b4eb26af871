"""Starting, watching and stopping the sandbox's processes, always by PID."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from pvc.core.errors import PvcError


class StartFailed(PvcError):
    """A sandbox process did not come up."""


def spawn(cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> int:
    """Start cmd detached in its own session (so its whole group can be signalled), output
    appended to log. Returns its PID."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=dict(env) if env is not None else None,
                                cwd=str(cwd) if cwd else None)
    return proc.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_until(what: str, ready: Callable[[], bool], timeout: float, pid: int | None = None,
               log: Path | None = None) -> float:
    """Poll ready() until true (a readiness probe of another process, bounded by timeout).
    Fails early if pid dies. Returns the seconds it took."""
    t0 = time.monotonic()
    delay = 0.02
    while True:
        if ready():
            return time.monotonic() - t0
        if pid is not None and not alive(pid):
            raise StartFailed(f"{what} exited during start-up{_tail(log)}")
        if time.monotonic() - t0 > timeout:
            raise StartFailed(f"{what} not ready after {timeout:g}s{_tail(log)}")
        time.sleep(delay)  # readiness probe of an external process
        delay = min(delay * 1.5, 0.25)


def _tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return f" (see {log}: {lines[-1][:200]})" if lines else f" (see {log})"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


KILL_WAIT = 2.0   # seconds a SIGKILLed process may take to be gone


def stop(pid: int, timeout: float = 10.0, group: bool = True) -> bool:
    """SIGTERM the process (and its group), SIGKILL after timeout. True if it had to be
    killed."""
    if not alive(pid):
        return False
    _signal(pid, signal.SIGTERM, group)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for a process to exit
    if alive(pid):
        _signal(pid, signal.SIGKILL, group)
        deadline = time.monotonic() + KILL_WAIT
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # a killed process is gone a moment later, not at once
        return True
    if group:
        _signal(pid, signal.SIGKILL, group)  # leftovers of the group, if any
    return False


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions text (to find strays after a stop)."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and not _zombie(int(entry.name)):
            found.append(int(entry.name))
    return found


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
