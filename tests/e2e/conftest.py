"""Sandboxes for the e2e tests, driven through the pvc CLI as an operator would."""
from __future__ import annotations

import json
import os
import pty
import queue
import select
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytest

from pvc.sandbox import procs
from tests.conftest import ROOT, run_pvc
from tests.waiting import until

SANDBOX_ENV = {"PVC_SANDBOX_DIR": "/run/pvc/test-sandbox"}
OFFSET = "1000"


UNAVAILABLE = 4     # pvc's exit code for "a server did not answer; nothing changed"


class ServerBusy(AssertionError):
    """pvc said a server it needs did not answer (ZooKeeper electing a leader, the broker
    failing over): a poll asks again, anything else fails on it."""


class Pvc:
    """Runs pvc against one sandbox."""

    def __init__(self, env: dict[str, str], offset: str) -> None:
        self.env = env
        self.offset = offset

    def __call__(self, *args: str, ok: bool = True, timeout: float = 180,
                 env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        res = run_pvc(*args, env={**self.env, **(env_extra or {})}, timeout=timeout)
        assert "Traceback" not in res.stderr, res.stderr
        if ok and res.returncode == UNAVAILABLE:
            raise ServerBusy(f"pvc {' '.join(args)}: {res.stderr}")
        if ok:
            assert res.returncode == 0, f"pvc {' '.join(args)}: {res.stderr}"
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--format", "json").stdout)

    def cluster_status(self) -> dict[str, Any]:
        """`cluster status` as JSON, healthy or not (its exit code says which)."""
        res = self("cluster", "status", "--format", "json", ok=False)
        if res.returncode == UNAVAILABLE:
            raise ServerBusy(f"pvc cluster status: {res.stderr}")
        return dict(json.loads(res.stdout))

    def error(self, *args: str) -> str:
        """Run a command that must fail with one clear line on stderr."""
        res = self(*args, ok=False)
        assert res.returncode != 0, res.stdout
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        return lines[0]

    def vms(self) -> dict[str, dict[str, Any]]:
        return {v["name"]: v for v in self.json("vm", "list")}

    def status(self) -> dict[str, Any]:
        """The sandbox's status (its exit code says whether every process runs)."""
        return json.loads(self("sandbox", "status", "--port-offset", self.offset, "--format",
                               "json", ok=False).stdout)


@contextmanager
def sandbox(name: str, offset: str, kind: str, nodes: int, vms: int,
            extra_env: dict[str, str] | None = None, database: bool = False,
            storage: bool = False, monitoring: bool = False) -> Iterator[Pvc]:
    env = {"PVC_SANDBOX_DIR": f"/run/pvc/{name}", **(extra_env or {})}
    p = Pvc(env, offset)
    run_pvc("sandbox", "down", "--port-offset", offset, env=env)
    up = run_pvc("sandbox", "up", "--hypervisor", kind, "--nodes", str(nodes), "--vms",
                 str(vms), "--port-offset", offset,
                 "--database" if database else "--no-database",
                 "--storage" if storage else "--no-storage",
                 "--monitoring" if monitoring else "--no-monitoring", env=env, timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        yield p
    finally:
        keep_logs(env["PVC_SANDBOX_DIR"], name)
        started = sandbox_processes(env["PVC_SANDBOX_DIR"])
        down = run_pvc("sandbox", "down", "--port-offset", offset, env=env)
        assert down.returncode == 0, down.stderr
        # `down` leaves nothing behind: no process it started, no guest, no state
        assert [p for p in started if procs.alive(p)] == []
        assert not os.path.exists(env["PVC_SANDBOX_DIR"])


def keep_logs(base: str, name: str) -> None:
    """With PVC_TEST_LOGS=DIR, every log of the sandbox is copied to DIR/NAME before it goes
    (to read what happened after a failure)."""
    import shutil
    from pathlib import Path
    into = os.environ.get("PVC_TEST_LOGS")
    if not into:
        return
    for log in Path(base).rglob("*.log"):
        target = Path(into, name, log.relative_to(base))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)


def sandbox_processes(base: str) -> list[int]:
    """Every process of a sandbox: those it started, their children, its QEMU guests."""
    from pathlib import Path
    state = json.loads(Path(base, "state.json").read_text())
    pids = set(procs.processes_mentioning(base + "/"))
    for pid in state["pids"].values():
        pids.update(_descendants(pid))
    for pidfile in Path(base).glob("nodes/*/libvirt/run/qemu/*.pid"):
        pids.add(int(pidfile.read_text()))
    return sorted(pids)


def _descendants(pid: int) -> list[int]:
    out = [pid]
    for child in procs.processes_mentioning(""):
        try:
            stat = open(f"/proc/{child}/stat").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) in out:
            out.append(child)
    return out


@pytest.fixture(scope="session")
def pvc() -> Iterator[Pvc]:
    # with the database and the monitoring too: test_monitoring.py reads them
    with sandbox("test-sandbox", OFFSET, "test", 3, 6, database=True, monitoring=True) as p:
        yield p


def wait_until(what: str, condition: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll a condition on another process's output (a log file, a CLI answer) until it
    holds; a server between two masters (ServerBusy) is "not yet"."""
    return until(what, condition, timeout, interval=0.1, tolerate=(ServerBusy,))


def _default_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class LineReader:
    """A pvc command whose stdout lines are read with a deadline (never hangs a test)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        # faulthandler: a process that does not end in time is asked where it is (SIGABRT).
        # Ctrl-C as on a terminal: a suite started in the background (`make test &`) runs
        # with SIGINT ignored, and a child would inherit that and never hear it.
        self.proc = subprocess.Popen([str(ROOT / ".venv/bin/pvc"), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or SANDBOX_ENV),
                                          "PYTHONFAULTHANDLER": "1"},
                                     preexec_fn=_default_interrupt)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.errors: list[str] = []
        self._errors_read = threading.Thread(target=self._pump_errors, daemon=True)
        threading.Thread(target=self._pump, daemon=True).start()
        self._errors_read.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _pump_errors(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line)

    def line(self, timeout: float = 30) -> str:
        return self.lines.get(timeout=timeout)

    def __enter__(self) -> "LineReader":
        return self

    def ended(self, timeout: float) -> int:
        """Its exit code; a process still running after timeout fails the test with the
        stack of each of its threads."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(10)
            self._errors_read.join(10)
            raise AssertionError(f"{self.proc.args} still ran after {timeout}s:\n"
                                 f"{''.join(self.errors)}") from None

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def on_a_terminal(args: list[str], answer: str = "", env: dict[str, str] | None = None,
                  timeout: float = 60) -> tuple[int, str]:
    """Run pvc with a terminal for stdin, stdout and stderr; answer its prompt (if any) once
    the prompt is shown. Its exit code and everything it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(ROOT / ".venv/bin/pvc"), *args], stdin=follower,
                            stdout=follower, stderr=follower,
                            env={**os.environ, **SANDBOX_ENV, **(env or {})})
    os.close(follower)
    output = b""
    answered = not answer
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N]" in output:
                os.write(leader, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(10), output.decode(errors="replace")
